"""Counting the model evaluations a chunk costs: the block-stack passes that ran while it was denoised.

The pipeline attaches the counter innermost on the model's step-cache hooks while it samples a chunk, so a pass a
step-caching policy skipped never reaches it; a chunk's ``model_evals`` is its count.
"""
from __future__ import annotations

from ca2vdm.models.hooks import ModelHook

COUNTER_HOOK = "evaluations"  # the name of the hook that counts the block-stack passes that ran


class EvalCounter(ModelHook):
    """Counts the block-stack passes that run (innermost on the model's step-cache hooks, so a pass a policy skips is
    never seen), per guidance branch: a pass over ``branches x batch`` rows counts ``branches``; commits not at all."""

    def __init__(self, batch: int):
        self.batch, self.count = batch, 0

    def forward(self, call, stack_call):
        if not stack_call.commit:
            self.count += stack_call.x.shape[0] // self.batch
        return call(stack_call)
