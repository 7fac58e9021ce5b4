"""The teacher and the critic read a window of the student's rollout as the student read it, through their own caches.

A window may sit hundreds of chunks into a rollout (:mod:`~ca2vdm.training.distill_rollout`), far beyond the clip a
model sees in one pass. The scoring model therefore replays it as inference would: its pipeline adopts the window the
student had before the window's first chunk (the frames as committed, at the context noise) and encodes it once
under its own weights and the rollout's condition (:meth:`~ca2vdm.sampling.pipeline.LongVideoPipeline.adopt_window`,
the re-cache of a switch); then, chunk by chunk, it predicts the velocity of the noisy chunk against its cache and
appends the chunk as the student committed it, switching its condition where the rollout did. Every chunk is thus
scored with exactly the frames the student saw and under the condition it was made with: a window that straddles a
switch is scored under the new condition from the switch on. At a switch the critic re-caches, as the student did
(it models the student's distribution); the teacher may flush instead (``distill.teacher_switch``): a causal teacher
that re-reads frames of the old condition under the new one lets the shape fade (the demo text teacher: gone for good
after a re-cached switch), while from the last frame alone it draws the new condition, continued from that frame: the
target a switch should reach. The velocities are guided as the scoring
pipeline's settings say (the teacher: ``distill.guidance`` against the null label or the empty prompt; the critic:
unguided). The cache's passes run under no_grad (as at inference); the noisy chunks' passes carry gradients when
grad is enabled (the critic's loss), reading the cache through a copy, and so do a text critic's prompt K/V.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from ca2vdm.sampling.conditioning import text_rows
from ca2vdm.sampling.pipeline import GenerationState, LongVideoPipeline
from ca2vdm.training.distill_rollout import Condition, Window


def replay(pipe: LongVideoPipeline, window: Window, drop: torch.Tensor | None = None, switch_mode: str = "recache"
           ) -> Iterator[tuple[GenerationState, int]]:
    """Yield ``(state, c)`` before window chunk c, ``state``'s cache holding what the student read there; after the
    caller's passes, chunk c is appended as committed. ``drop`` (B,) bool: these rows conditioned on nothing (the
    null label or the empty prompt), before and after a switch (the critic's caption dropout). ``switch_mode``: how
    the scoring model switches where the rollout did: ``recache`` reads what the student read; ``flush`` keeps only
    the sinks and the last frame before the switch (the teacher's target: the new condition, continued from there)."""
    condition = lambda c: c if drop is None else c.dropped(drop, pipe.model.null_label)  # noqa: E731
    state = pipe.start(batch=window.clip.shape[0], seed=0, **condition(window.condition).kwargs())
    _prompt_kv_with_grad(pipe, state, condition(window.condition))
    pipe.adopt_window(state, window.sinks, window.context, window.frames)
    for c, committed in enumerate(window.committed):
        if window.switch is not None and c == window.switch[0]:
            pipe.switch(state, mode=switch_mode, **condition(window.switch[1]).kwargs())
            _prompt_kv_with_grad(pipe, state, condition(window.switch[1]))
        yield state, c
        pipe.commit(state, committed, perturbed=True)


def _prompt_kv_with_grad(pipe: LongVideoPipeline, state: GenerationState, condition: Condition) -> None:
    """With gradients enabled (the critic's loss), make the prompt rows' K/V again with them: the pipeline made them
    under no_grad, as inference does, which would leave a text critic's cross-attention projections untrained. The
    values are the same; the cache's passes still read them under no_grad."""
    if torch.is_grad_enabled() and condition.prompt is not None:
        cond = state.conditioning
        cond.text = text_rows(pipe.model, pipe.text_encoder, condition.prompt, state.batch, cond.groups)


def window_velocity(pipe: LongVideoPipeline, window: Window, noisy: torch.Tensor, t: torch.Tensor,
                    drop: torch.Tensor | None = None, switch_mode: str = "recache") -> torch.Tensor:
    """(B, C, T, H, W) the velocity ``pipe``'s model predicts for the window's chunks noised to ``noisy`` (B, C, T,
    H, W) at times ``t`` (B, K: one per video and chunk), each chunk read against the window before it (:func:`replay`;
    ``drop`` and ``switch_mode`` as there)."""
    out = []
    for state, c in replay(pipe, window, drop, switch_mode):
        start, length = window.chunks[c]
        out.append(pipe.denoiser(state)(noisy[:, :, start:start + length], t[:, c], c))
    return torch.cat(out, dim=2)
