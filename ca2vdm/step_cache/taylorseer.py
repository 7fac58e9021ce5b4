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

import torch

from .base import StackFn, StepCache
from .registry import register


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


@register
class TaylorSeer(StepCache):
    """Compute every ``interval``-th step; forecast the residual in between from its finite differences."""

    name, options = "taylorseer", ("interval", "order", "warmup", "growth", "cfg_reuse")

    def __init__(self, interval: int = 4, order: int = 1, warmup: int = 2, growth: int = 0, cfg_reuse: int = 0):
        super().__init__()
        if interval < 1 or order < 0 or warmup < 1 or growth < 0 or cfg_reuse not in (0, 1):
            raise ValueError("TaylorSeer needs interval >= 1, order >= 0, warmup >= 1, growth >= 0, cfg_reuse 0 or 1")
        self.interval, self.order, self.warmup, self.growth, self.cfg_reuse = interval, order, warmup, growth, cfg_reuse

    def computed_steps(self) -> list[int]:
        return schedule(self.num_steps, self.interval, self.warmup, self.growth)

    def guide(self, both, cond, scale: float) -> torch.Tensor:
        steps = self.computed_steps()
        cond_only = self.cfg_reuse and self.index in steps[2:-1:2]
        return self.guide_reusing_uncond(both, cond, scale, cond_only,
                                         keep=bool(self.cfg_reuse) and self.index in steps)

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        groups = [self.state["cond"], self.state["uncond"]] if self.branch == "cond+uncond" else [self.state["cond"]]
        if self.index not in self.computed_steps() and all("derivatives" in g for g in groups):
            return x + torch.cat([forecast(g["derivatives"], self.index - g["step"]) for g in groups]), True
        out = stack_forward(x, c, ctx)
        for g, residual in zip(groups, (out - x).chunk(len(groups))):
            g["derivatives"] = refresh_derivatives(g.get("derivatives", []), residual, self.index - g.get("step", 0),
                                                   self.order)
            g["step"] = self.index
        return out, False
