"""A generation in progress: the chunks :meth:`ca2vdm.generation.api.Pipeline.generate` yields, and switches of its
label or prompt between chunks.

    video = pipe.generate(20, prompt="a red circle")
    for chunk in video:
        if chunk.index == 9:
            video.switch(prompt="a blue square")      # from chunk 10 on; re-caches the window (switch_mode)

A switch may also be scheduled before (``generate(..., switches={10: "a blue square"})`` or ``video.switch(...,
at=10)``); it applies just before its chunk is denoised. A switch at a chunk already generated, past the last, or at a
chunk that already has one, is refused in one line. This is the one switch scheduler: the command line, the API and
the live demo's pages (``ca2vdm.serve.frames``) all schedule through it.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ca2vdm.config import SWITCH_MODES
from ca2vdm.config.conditioning import check_prompt, check_switch_request
from ca2vdm.errors import SettingError
from ca2vdm.sampling.conditioning import kind_of
from ca2vdm.sampling.pipeline import LongVideoPipeline


@dataclass(frozen=True)
class Switch:
    """A new label or prompt from chunk ``at`` on, and what happens to the window (``mode``)."""
    at: int
    label: int | None = None
    prompt: str | None = None
    mode: str = "recache"


def scheduled(switches: object, mode: str) -> list[Switch]:
    """``switches`` of :meth:`~ca2vdm.generation.api.Pipeline.generate` ({chunk: new prompt (text) or new label (a
    whole number)}, or None) as Switch values; SettingError naming ``switches`` for anything else."""
    if switches is None:
        return []
    if not isinstance(switches, Mapping):
        raise SettingError("switches", type(switches).__name__, "give a dict {chunk: new prompt (text) or new label "
                           "(a whole number)}")
    out = []
    for at, new in switches.items():
        if not isinstance(new, (str, numbers.Integral)) or isinstance(new, bool):
            raise SettingError("switches", f"[{at!r}]={new!r}", "each new condition is a prompt (text) or a label "
                               "(a whole number)")
        out.append(Switch(at, prompt=new, mode=mode) if isinstance(new, str) else Switch(at, label=new, mode=mode))
    return out


def check_switch(pipe: LongVideoPipeline, switch: Switch, next_index: int, num_chunks: int | None) -> Switch:
    """Refuse a switch that cannot happen, when it is scheduled (so every switch given with the generation is checked
    before its first chunk): a chunk already generated or past the last, a label for a text model (or a prompt for
    a label model), a label outside the model's classes, an empty or over-long prompt, an unknown mode or one the
    cache mode cannot carry out (``keep`` outside mode kv). A problem of the new label or prompt names the switch,
    not the generation's own ``label`` or ``prompt``."""
    if isinstance(switch.at, bool) or not isinstance(switch.at, int):
        raise SettingError("switch", repr(switch.at), "must be a chunk number (0-based, a whole number)")
    if switch.at < next_index:
        raise SettingError("switch", switch.at, f"chunk {switch.at} was already generated; the next chunk is "
                           f"{next_index}: switch there or later")
    if num_chunks is not None and switch.at >= num_chunks:
        raise SettingError("switch", switch.at, f"is past the last chunk ({num_chunks - 1}): the video ends before")
    if switch.mode in SWITCH_MODES:
        pipe.check_switch_mode(switch.mode)
    new = switch.prompt if switch.prompt is not None else switch.label
    try:
        check_switch_request(kind_of(pipe.model), pipe.model.cfg.num_classes, switch.label, switch.prompt,
                             switch.mode)
        if switch.prompt is not None:
            prompt = check_prompt(switch.prompt)
            if pipe.text_encoder is not None:
                pipe.text_encoder.encode(prompt)  # refused now if too long, not when its chunk comes (and kept)
    except SettingError as e:
        if e.name not in ("label", "prompt"):
            raise
        shown = repr(new if len(str(new)) <= 40 else str(new)[:40] + "...") if isinstance(new, str) else new
        raise SettingError("switch", f"{switch.at}={shown}", f"new {e.name}: {e.problem}") from None
    return switch


class VideoStream(Iterator):
    """Iterates over the chunks of one generation (a generator inside: nothing runs before the first ``next``;
    :meth:`close` stops it between chunks) and takes switches of its label or prompt."""

    def __init__(self, pipe: LongVideoPipeline, chunks: Callable[[VideoStream], Iterator], num_chunks: int | None,
                 switches: list[Switch] = ()):
        self.pipe, self.num_chunks = pipe, num_chunks
        self.next_index = 0              # the chunk that comes next
        self.pending: dict[int, Switch] = {}
        for switch in switches:
            self._schedule(switch)
        self._chunks = chunks(self)

    def __next__(self):
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def switch(self, *, prompt: str | None = None, label: int | None = None, at: int | None = None,
               mode: str = "recache") -> int:
        """Condition the chunks from ``at`` (default: the next one) on ``prompt`` (a text model) or ``label`` (a label
        model); ``mode``: recache (default) | keep | reset (:meth:`LongVideoPipeline.switch`). Returns the chunk it
        applies at."""
        return self._schedule(Switch(self.next_index if at is None else at, label, prompt, mode))

    def _schedule(self, switch: Switch) -> int:
        if switch.at in self.pending:
            raise SettingError("switch", switch.at, "chunk already has a switch; give one per chunk")
        self.pending[switch.at] = check_switch(self.pipe, switch, self.next_index, self.num_chunks)
        return switch.at

    def before(self, state, index: int) -> None:
        """Called by the generator just before chunk ``index``: apply its switch."""
        self.next_index = index
        switch = self.pending.pop(index, None)
        if switch is not None:
            self.pipe.switch(state, label=switch.label, prompt=switch.prompt, mode=switch.mode)

    def after(self, index: int) -> None:
        """Called by the generator once chunk ``index`` is out."""
        self.next_index = index + 1
