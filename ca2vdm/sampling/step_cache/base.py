"""The interface every step-caching policy implements, and the hook that attaches it to a model's block stack.

A policy is configured by its settings dataclass (``config``, :mod:`ca2vdm.config.step_caches`) and attaches a
:class:`StepCacheHook` to the model's step-cache entry point (``model.step_cache_hooks``, :mod:`ca2vdm.models.base`);
the model code knows nothing about it. Only denoising passes reach the policy: commit passes, which write the
conditioning KV cache, always run in full. What a policy may read of a call is the
:class:`~ca2vdm.models.base.StackCall` interface (the tokens, the frames being denoised, the first block's modulated
input); it never reaches into the model, so every model family gets every policy.

The pipeline drives a policy with:
* :meth:`StepCache.reset` when a video starts (a policy that learns from a video's chunks forgets the last video);
* :meth:`StepCache.begin_chunk` before the first denoising step of a chunk (per-chunk state, typed per branch in
  :class:`BranchStates`, starts afresh);
* :meth:`StepCache.step`, a scope around each model call naming the branch (``cond+uncond`` when the guidance rows
  run batched, one decision for both; ``cond`` when a policy runs the conditional rows alone), the step index and
  the step count, restored when the scope ends;
* :meth:`StepCache.guide` to combine the two guidance branches (CFG-Cache policies override it).
It attaches itself to the model only while the pipeline samples (:meth:`StepCache.attached`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import torch

from ca2vdm.config import StepCacheConfig
from ca2vdm.models.base import CausalVideoModel, StackCall
from ca2vdm.models.hooks import ModelHook
from ca2vdm.sampling.flow import guidance

STEP_CACHE_HOOK = "step_cache"  # the name a step-caching policy's hooks take on the model
Compute = Callable[[], torch.Tensor]  # runs the block stack on the call (the rest of the hook chain)
S = TypeVar("S")


def relative_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean|a - b| / mean|b| as a 0-dim tensor (no host sync)."""
    return (a - b).abs().mean() / b.abs().mean().clamp_min(1e-12)


class BranchStates(Generic[S]):
    """A policy's typed per-branch state: one ``S`` per branch kind (``cond+uncond``, ``cond``, ``uncond``), made by
    ``factory`` on first use and dropped by :meth:`reset` (every chunk)."""

    def __init__(self, factory: Callable[[], S]):
        self.factory = factory
        self._states: dict[str, S] = {}

    def __getitem__(self, branch: str) -> S:
        if branch not in self._states:
            self._states[branch] = self.factory()
        return self._states[branch]

    def reset(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


class StepCacheHook(ModelHook):
    """What a policy attaches to the block stack: commit passes run in full, denoising passes go to the policy."""

    def __init__(self, policy: StepCache):
        self.policy = policy

    def forward(self, call: Callable[[StackCall], torch.Tensor], stack_call: StackCall) -> torch.Tensor:
        if stack_call.commit:
            self.policy.committing = True  # attention-level hooks pass commit passes through too
            try:
                return call(stack_call)
            finally:
                self.policy.committing = False
        out, reused = self.policy.run_stack(lambda: call(stack_call), stack_call)
        if reused:
            self.policy.skipped += self.policy.branches
        return out

    def reset(self) -> None:
        self.policy.reset()


class StepCache:
    """Base policy: computes every step. Subclasses override :meth:`run_stack` (and maybe :meth:`guide`), declare
    their settings (``config_type``) and their per-branch state (``State``, a dataclass), and register by name
    (:func:`ca2vdm.sampling.step_cache.registry.register`)."""

    name: ClassVar[str] = "none"
    config_type: ClassVar[type[StepCacheConfig] | None] = None
    State: ClassVar[type] = dict

    def __init__(self, config: StepCacheConfig | None = None, **options: Any):
        if config is not None and options:
            raise TypeError("give the settings as a config or as keywords, not both")
        self.config = config if config is not None or self.config_type is None else self.config_type(**options)
        self.model: CausalVideoModel | None = None
        self.hook = StepCacheHook(self)
        self.branch, self.index, self.num_steps, self.branches = "cond", 0, 1, 1
        self.committing = False     # a commit pass is running (it always runs in full)
        self.skipped = 0            # block-stack evaluations (per guidance branch) avoided in the current chunk
        self.states: BranchStates = BranchStates(self.State)
        self.uncond_bias: torch.Tensor | None = None  # v_uncond - v_cond kept from the last step that ran both
        self.reset()

    @classmethod
    def from_calibration(cls, calibration: Mapping[str, list[float]], source: str,
                         config: StepCacheConfig | None) -> StepCache:
        """The policy for a checkpoint whose step-cache calibrations are ``calibration`` (``source`` names it in
        messages); ``config``: its settings (None: the defaults)."""
        return cls(config)

    # -- life cycle -------------------------------------------------------------------------------------------
    def attach(self, model: CausalVideoModel) -> None:
        """Hook ``model``'s step-cache entry point; one policy per model at a time (prefer :meth:`attached`)."""
        if STEP_CACHE_HOOK in model.step_cache_hooks:
            raise ValueError("a step cache is already attached to this model; detach it first")
        model.step_cache_hooks.attach(STEP_CACHE_HOOK, self.hook)
        self.model = model

    def detach(self) -> None:
        """Remove the hooks."""
        self.model.step_cache_hooks.detach(STEP_CACHE_HOOK)
        self.model = None

    @contextlib.contextmanager
    def attached(self, model: CausalVideoModel) -> Iterator[StepCache]:
        """Attached to ``model`` for the scope of a ``with`` block; the model is as before afterwards."""
        self.attach(model)
        try:
            yield self
        finally:
            self.detach()

    def reset(self) -> None:
        """Forget everything (a new video); subclasses that learn across chunks extend it."""
        self._clear_chunk()

    def begin_chunk(self) -> None:
        """A chunk starts: per-chunk state and counts start afresh."""
        self._clear_chunk()

    def _clear_chunk(self) -> None:
        self.states.reset()
        self.uncond_bias = None
        self.skipped = 0

    @contextlib.contextmanager
    def step(self, branch: str, index: int, num_steps: int, branches: int = 1) -> Iterator[None]:
        """Scope of one model call: which branch (``cond+uncond`` when guidance rows are batched: one decision
        for both, as in TeaCache), which denoising step, how many guidance branches it evaluates. The enclosing
        scope's values come back on exit."""
        saved = self.branch, self.index, self.num_steps, self.branches
        self.branch, self.index, self.num_steps, self.branches = branch, index, num_steps, branches
        try:
            yield
        finally:
            self.branch, self.index, self.num_steps, self.branches = saved

    @property
    def boundary_step(self) -> bool:
        """First and last steps of a chunk are always computed."""
        return self.index == 0 or self.index == self.num_steps - 1

    @property
    def branch_state(self):
        """The current branch's state (a ``State``)."""
        return self.states[self.branch]

    # -- decisions --------------------------------------------------------------------------------------------
    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        """Return (the stack's output for ``call``, whether it was reused instead of computed by ``compute()``)."""
        return compute(), False

    def reuse_or_compute(self, compute: Compute, call: StackCall, reuse: bool) -> tuple[torch.Tensor, bool]:
        """The residual-reuse step of TeaCache and MagCache: with ``reuse``, the input plus the residual the branch
        kept (``state.residual``); otherwise the stack's output, whose residual is kept."""
        state = self.branch_state
        if reuse:
            return call.x + state.residual, True
        out = compute()
        state.residual = out - call.x
        return out, False

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
        if cond_only and self.uncond_bias is not None:
            v_cond = cond()
            self.skipped += 1  # the unconditional evaluation that did not run
            return guidance(v_cond, v_cond + self.uncond_bias, scale)
        v_cond, v_uncond = both()
        if keep:
            self.uncond_bias = v_uncond - v_cond
        return guidance(v_cond, v_uncond, scale)
