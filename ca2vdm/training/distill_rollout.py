"""The few-step student's own rollout, with gradients through one exit step per chunk (Self-Forcing,
arXiv 2506.08009).

The student makes a clip exactly as inference does: chunk by chunk through its bounded KV cache
(:class:`~ca2vdm.sampling.pipeline.LongVideoPipeline`: the same cache, noise, Euler steps and commit pass at t = 0),
except that chunk c stops at its exit step ``exits[c]`` and returns the prediction of the clean chunk made there,
``x_t - t v``: the step itself carries gradients, every step before it runs under no_grad, and the commit pass (the
chunk's keys and values for the chunks after it) is made from the detached chunk. Every exit step therefore yields a
sample of the student's distribution (the last one is exactly what inference samples), and the backward pass goes
through one forward pass per chunk. The exit steps must be the same on every process (sharded models run the same
passes on all of them).
"""
from __future__ import annotations

import torch

from ca2vdm.sampling.conditioning import Prompt
from ca2vdm.sampling.pipeline import LongVideoPipeline


def self_rollout(pipe: LongVideoPipeline, batch: int, labels: torch.Tensor | None, seed: int, exits: list[int],
                 grad: bool = True, prompt: Prompt = None) -> torch.Tensor:
    """The clip (B, C, T, H, W) of ``len(exits)`` chunks the student ``pipe`` makes from ``seed``'s noise for
    ``batch`` videos of ``labels`` (B,) (the null label allowed; None for an unconditional model) or of a text
    model's ``prompt``, chunk c stopped at step ``exits[c]`` (:meth:`LongVideoPipeline.next_chunk`'s ``exit_step``);
    with ``grad`` that step carries gradients (otherwise nothing does)."""
    state = pipe.start(batch=batch, label=labels, seed=seed, prompt=prompt)
    chunks = [pipe.next_chunk(state, exit_step=k, grad=grad).frames for k in exits]
    return torch.cat(chunks, dim=2)
