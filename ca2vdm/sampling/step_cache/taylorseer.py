"""TaylorSeer (Liu et al., arXiv 2503.06923): forecast the skipped steps' features by a Taylor expansion.

After ``warmup`` computed steps, the block stack runs on every ``interval``-th step only (and on the last step).
A computed step at index ``s`` with residual ``r_s`` (stack output - input) refreshes the finite-difference
estimates of its derivatives in the step index, from the previous computed step ``s'``:
``D_0 = r_s``, ``D_{k+1} = (D_k - D_k') / (s - s')`` up to ``order`` (``D_k'`` the estimates kept at ``s'``).
A skipped step ``s + n`` uses the forecast ``sum_k D_k n^k / k!`` added to its own input. No calibration;
``interval=1`` computes every step. We forecast the whole stack's residual (the paper forecasts each module's
output; the stack is the unit our hook skips), for the conditional and unconditional rows separately.

Two options of ours, off by default (the paper's schedule): ``growth`` lengthens the interval by that many steps
after each computed step (late steps change the residual least: 0, 1, 3, 6, 10, 15 for ``warmup=2, interval=2,
growth=1`` at 16 steps), and ``cfg_reuse=1`` runs every other computed step from the third on (never the last)
with the conditional branch only, the unconditional velocity rebuilt from the difference kept at the last step
that ran both (:meth:`StepCache.guide_reusing_uncond`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ca2vdm.config.step_caches import TaylorSeerConfig
from ca2vdm.models.blocks import StackCall
from ca2vdm.sampling.step_cache.base import Compute, StepCache
from ca2vdm.sampling.step_cache.registry import register


def refresh_derivatives(previous: list[torch.Tensor], feature: torch.Tensor, distance: int,
                        order: int) -> list[torch.Tensor]:
    """Finite-difference derivative estimates [D_0 .. D_m] at a new computed step, ``distance`` steps after the
    one ``previous`` was estimated at (``previous`` empty at the first computed step); m <= order."""
    derivatives = [feature]
    for k in range(min(order, len(previous))):
        derivatives.append((derivatives[k] - previous[k]) / distance)
    return derivatives


def forecast(derivatives: list[torch.Tensor], offset: int) -> torch.Tensor:
    """Taylor expansion ``sum_k D_k offset^k / k!``."""
    out = derivatives[0]
    for k in range(1, len(derivatives)):
        out = out + derivatives[k] * (offset ** k / math.factorial(k))
    return out


def schedule(num_steps: int, interval: int, warmup: int, growth: int = 0) -> list[int]:
    """The computed steps: the first ``warmup``, then gaps of ``interval``, ``interval + growth``, ...; the last."""
    steps, gap = list(range(min(warmup, num_steps))), interval
    while steps[-1] + gap < num_steps - 1:
        steps.append(steps[-1] + gap)
        gap += growth
    return steps if steps[-1] == num_steps - 1 else steps + [num_steps - 1]


@dataclass
class TaylorState:
    """One guidance branch's (cond or uncond) derivative estimates within a chunk."""
    derivatives: list[torch.Tensor] = field(default_factory=list)  # [D_0 .. D_m] at the last computed step
    step: int = 0                                                  # that step


@register
class TaylorSeer(StepCache):
    """Compute every ``interval``-th step; forecast the residual in between from its finite differences."""

    config_type, State = TaylorSeerConfig, TaylorState

    def computed_steps(self) -> list[int]:
        c = self.config
        return schedule(self.num_steps, c.interval, c.warmup, c.growth)

    def guide(self, both, cond, scale: float) -> torch.Tensor:
        steps = self.computed_steps()
        cfg_reuse = self.config.cfg_reuse
        return self.guide_reusing_uncond(both, cond, scale, cfg_reuse and self.index in steps[2:-1:2],
                                         keep=cfg_reuse and self.index in steps)

    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        groups = [self.states["cond"], self.states["uncond"]] if self.branch == "cond+uncond" else [self.states["cond"]]
        if self.index not in self.computed_steps() and all(g.derivatives for g in groups):
            return call.x + torch.cat([forecast(g.derivatives, self.index - g.step) for g in groups]), True
        out = compute()
        for g, residual in zip(groups, (out - call.x).chunk(len(groups))):
            g.derivatives = refresh_derivatives(g.derivatives, residual, self.index - g.step, self.config.order)
            g.step = self.index
        return out, False
