"""The interface every step-caching policy implements, and the hook that attaches it to a model.

A policy wraps the model's block stack (``model.stack``) through an instance-level forward hook; the model code
knows nothing about it. Only denoising passes go through the policy: commit passes, which write the conditioning
KV cache, always run in full. State is kept per call kind (``cond+uncond`` when the guidance rows run batched, one decision for both; ``cond``
when a policy runs the conditional rows alone) and reset at every chunk.

The pipeline drives a policy with three calls:
* :meth:`StepCache.begin_chunk` before the first denoising step of a chunk;
* :meth:`StepCache.step` around each model call, naming the branch, the step index and the step count;
* :meth:`StepCache.guide` to combine the two guidance branches (FasterCache's CFG-Cache overrides it).
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable, Iterator

import torch
from torch import nn

from ..diffusion import guidance

StackFn = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def noisy(x: torch.Tensor, ctx) -> torch.Tensor:
    """The frames being denoised of a (B, T, ...) stack input or output: a recompute pass (cache modes ``none`` and
    ``full``) leads with ``ctx.num_cond_frames`` conditioning frames, which no indicator may look at, so that a
    policy decides alike in every cache mode."""
    return x[:, ctx.num_cond_frames:]


def relative_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean|a - b| / mean|b| as a 0-dim tensor (no host sync)."""
    return (a - b).abs().mean() / b.abs().mean().clamp_min(1e-12)


class StepCache:
    """Base policy: computes every step. Subclasses override :meth:`run_stack` (and maybe :meth:`guide`).

    A policy offered by ``--step-cache`` names itself (``name``), lists the constructor arguments a user may set
    (``options``, each a number) and registers itself with :func:`ca2vdm.step_cache.registry.register`.
    """

    name = "none"
    options: tuple[str, ...] = ()

    @classmethod
    def from_checkpoint(cls, metadata: dict, checkpoint: str, **options) -> "StepCache":
        """The policy for a checkpoint (its metadata may hold a calibration); ``options`` as in ``options``."""
        return cls(**options)

    def __init__(self):
        self.model: nn.Module | None = None
        self.branch, self.index, self.num_steps, self.branches = "cond", 0, 1, 1
        self.computed = 0           # block-stack evaluations (per guidance branch) run in the current chunk
        self.skipped = 0            # block-stack evaluations (per guidance branch) avoided in the current chunk
        self.state: dict[str, dict] = defaultdict(dict)  # per call kind, reset every chunk

    # -- life cycle -------------------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        """Hook ``model.stack``; called by ``model.enable_cache``."""
        self.model = model
        stack_forward = model.stack.forward
        model.stack.forward = lambda x, c, ctx: self._stack(stack_forward, x, c, ctx)

    def detach(self) -> None:
        """Remove the hooks (the class's forward shows through again)."""
        del self.model.stack.forward
        self.model = None

    def begin_chunk(self) -> None:
        self.state.clear()
        self.computed = self.skipped = 0

    @contextlib.contextmanager
    def step(self, branch: str, index: int, num_steps: int, branches: int = 1) -> Iterator[None]:
        """Scope of one model call: which branch (``cond+uncond`` when guidance rows are batched: one decision
        for both, as in TeaCache), which denoising step, how many guidance branches it evaluates."""
        self.branch, self.index, self.num_steps, self.branches = branch, index, num_steps, branches
        yield

    @property
    def boundary_step(self) -> bool:
        """First and last steps of a chunk are always computed."""
        return self.index == 0 or self.index == self.num_steps - 1

    # -- decisions --------------------------------------------------------------------------------------------
    def _stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> torch.Tensor:
        if ctx.commit:
            return stack_forward(x, c, ctx)
        out, reused = self.run_stack(stack_forward, x, c, ctx)
        if reused:
            self.skipped += self.branches
        else:
            self.computed += self.branches
        return out

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        """Return (stack output, whether it was reused instead of computed)."""
        return stack_forward(x, c, ctx), False

    def guide(self, both: Callable[[], tuple[torch.Tensor, torch.Tensor]], cond: Callable[[], torch.Tensor],
              scale: float) -> torch.Tensor:
        """Classifier-free guidance: ``both()`` runs the two branches batched, ``cond()`` the conditional only."""
        return guidance(*both(), scale)

    def guide_reusing_uncond(self, both: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                             cond: Callable[[], torch.Tensor], scale: float, cond_only: bool,
                             keep: bool) -> torch.Tensor:
        """Guidance that may skip the unconditional branch (FasterCache's CFG-Cache without the frequency split):
        with ``cond_only`` (and a kept difference), run the conditional branch alone and take ``v_uncond = v_cond +
        kept``; otherwise run both and, with ``keep``, keep ``v_uncond - v_cond`` for the next such step."""
        kept = self.state["kept uncond - cond"]
        if cond_only and "bias" in kept:
            v_cond = cond()
            self.skipped += 1  # the unconditional evaluation that did not run
            return guidance(v_cond, v_cond + kept["bias"], scale)
        v_cond, v_uncond = both()
        if keep:
            kept["bias"] = v_uncond - v_cond
        return guidance(v_cond, v_uncond, scale)

    @property
    def branch_state(self) -> dict:
        return self.state[self.branch]
