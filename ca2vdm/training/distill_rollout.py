"""The few-step student's own long rollout, with gradients through one exit step per chunk of a window (Self-Forcing,
arXiv 2506.08009; Self-Forcing++ and LongLive's streaming long tuning for rollouts longer than the window).

The student makes a video exactly as inference does: chunk by chunk through its bounded KV cache
(:class:`~ca2vdm.sampling.pipeline.LongVideoPipeline`: the same cache, noise, Euler steps and commit pass at t = 0).
The chunks before the scored window are inference itself, under no_grad (no graph is kept, so memory does not grow
with the rollout's length); in the window, chunk c stops at its exit step ``exits[c]`` and returns the prediction of
the clean chunk made there, ``x_t - t v``: that step carries gradients, every step before it runs under no_grad, and
the commit pass is made from the detached chunk. Every exit step yields a sample of the student's distribution (the
last one is exactly what inference samples). A rollout may switch its condition once, inside the window, with
:meth:`~ca2vdm.sampling.pipeline.LongVideoPipeline.switch` (recache), exactly as inference switches.

The returned :class:`Window` keeps what the teacher and the critic need to read the window as the student did
(:mod:`~ca2vdm.training.distill_window`): the window before its first chunk and each chunk as committed. Everything
that decides which passes run (the window's place, the exit steps, the switch's chunk) is drawn from
(seed, step) alone (:func:`rollout_plan`), so sharded models run the same passes on every process.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.sampling.pipeline import LongVideoPipeline


@dataclass
class Condition:
    """What a rollout is conditioned on, one row per video: a label model's labels (the null label allowed), a text
    model's prompts (empty rows: unconditional), or neither (an unconditional model)."""
    label: torch.Tensor | None = None        # (B,) long
    prompt: TextEmbeddings | None = None     # B rows

    def kwargs(self) -> dict:
        return {"label": self.label, "prompt": self.prompt}

    def dropped(self, drop: torch.Tensor, null_label: int | None) -> Condition:
        """The rows where ``drop`` (B,) bool is set conditioned on nothing: the null label or the empty prompt."""
        label, prompt = self.label, self.prompt
        if label is not None:
            label = torch.where(drop.to(label.device), torch.full_like(label, null_label), label)
        if prompt is not None:
            keep = ~drop.to(prompt.mask.device)
            prompt = TextEmbeddings(prompt.tokens * keep[:, None, None], prompt.mask & keep[:, None])
        return replace(self, label=label, prompt=prompt)


@dataclass
class Plan:
    """Which passes one training step's rollout runs: drawn from (seed, step) alone."""
    start: int                  # the window's first chunk (the pipeline's numbering: 0 is the first frame's chunk)
    exits: list[int]            # each window chunk's exit step
    switch_at: int | None       # the window chunk (>= 1) before which the condition switches, or None


def rollout_plan(seed: int, step: int, total: int, window: int, steps: int, switch_share: float) -> Plan:
    """The plan of ``step``'s rollout of ``total`` chunks: a window of ``window`` chunks anywhere in it (uniform), its
    exit steps (uniform in 0 .. steps - 1), and with probability ``switch_share`` a switch inside the window."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    exits = torch.randint(steps, (window,), generator=gen).tolist()
    start = int(torch.randint(total - window + 1, (), generator=gen))
    switch = bool(torch.rand((), generator=gen) < switch_share) and window > 1
    at = int(torch.randint(1, max(window, 2), (), generator=gen))
    return Plan(start, exits, at if switch else None)


@dataclass
class Window:
    """A window of the student's rollout: what it made, and what it read."""
    clip: torch.Tensor                  # (B, C, T, H, W) the window's chunks (exit predictions; grad if asked)
    chunks: list[tuple[int, int]]       # (start, length) of each chunk in ``clip``
    sinks: list[torch.Tensor]           # the student's window before the first chunk, as committed (perturbed)
    context: list[torch.Tensor]
    frames: int                         # frames of video before the window
    committed: list[torch.Tensor]       # each chunk as committed (B, C, L, H, W): what the next chunks read
    condition: Condition                # at the window's start
    switch: tuple[int, Condition] | None = None  # (window chunk, the condition from it on)


def self_rollout(pipe: LongVideoPipeline, batch: int, condition: Condition, seed: int, plan: Plan,
                 new_condition: Condition | None = None, grad: bool = True) -> Window:
    """The window ``plan`` places in the rollout the student ``pipe`` makes from ``seed``'s noise for ``batch``
    videos of ``condition``: the chunks before it sampled as inference samples them (no_grad), window chunk c stopped
    at step ``plan.exits[c]`` (:meth:`LongVideoPipeline.next_chunk`'s ``exit_step``; with ``grad`` that step carries
    gradients, otherwise nothing does); at ``plan.switch_at`` the condition switches to ``new_condition`` (recache).
    The rollout ends with the window: later chunks would change nothing of it."""
    state = pipe.start(batch=batch, seed=seed, **condition.kwargs())
    for _ in range(plan.start):
        pipe.next_chunk(state)
    cond = state.conditioning
    sinks, context, frames = list(cond.sinks), list(cond.context), state.frames
    made, committed, switch = [], [], None
    for c, k in enumerate(plan.exits):
        if c == plan.switch_at:
            pipe.switch(state, mode="recache", **new_condition.kwargs())
            switch = (c, new_condition)
        made.append(pipe.next_chunk(state, exit_step=k, grad=grad).frames)  # (B, C, L, H, W)
        committed.append(torch.cat(cond.sinks + cond.context, dim=2)[:, :, -made[-1].shape[2]:])
    lengths = [x.shape[2] for x in made]
    chunks = [(sum(lengths[:c]), n) for c, n in enumerate(lengths)]
    return Window(torch.cat(made, dim=2), chunks, sinks, context, frames, committed, condition, switch)


def trajectory_condition(pipe: LongVideoPipeline, rows: torch.Tensor, prompts: list[str] | None) -> Condition:
    """The condition of trajectory rows (B,) (:mod:`~ca2vdm.training.ode_pairs`): a label model's labels as they are;
    a text model's numbers of ``prompts`` (``len(prompts)``: the empty prompt) encoded by ``pipe``'s text encoder;
    nothing for an unconditional model."""
    model, device = pipe.model, pipe.model.device
    if not model.text_conditional:
        return Condition(label=rows.to(device) if model.null_label is not None else None)
    empty = model.empty_text(1, pipe.text_encoder)
    encoded = [pipe.text_encoder.encode(prompts[i]) if i < len(prompts) else empty for i in rows.tolist()]
    return Condition(prompt=TextEmbeddings.cat(encoded).to(device))
