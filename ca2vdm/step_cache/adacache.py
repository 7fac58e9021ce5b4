"""AdaCache (Kahatapitiya et al., arXiv 2411.02397): a per-video schedule of residual reuse, with MoReg.

At a computed step the block stack's residual ``r_t`` (output - input; the all-blocks setting of AdaCache) is
compared with the one of the previous computed step: ``c = |r_t - r_prev|_1 / |r_prev|_1 / steps_between``.
Motion Regularisation scales it: with ``m`` the mean change of the residual between neighbouring frames (relative
to its magnitude) and ``g`` the growth of ``m`` since the last computed step, ``c' = c * (1 + motion_weight * m
+ growth_weight * max(g, 0))``, so high-motion chunks recompute more often. A codebook maps ``c'`` to the number of
steps until the next computation; in between, the stored residual is reused.
"""
from __future__ import annotations

import torch

from .base import StackFn, StepCache, noisy, relative_l1
from .registry import register

# (upper bound of the regularised change rate, steps until the next computation); the last bound is +inf.
DEFAULT_CODEBOOK = ((0.03, 4), (0.06, 3), (0.12, 2), (float("inf"), 1))
OFF = ((float("inf"), 1),)  # compute every step


def motion(residual: torch.Tensor) -> torch.Tensor:
    """Mean |r[:, t+1] - r[:, t]| / mean |r| over the frames of a (B, T, S, D) residual (0 for one frame)."""
    if residual.shape[1] < 2:
        return residual.new_zeros(())
    return relative_l1(residual[:, 1:], residual[:, :-1])


@register
class AdaCache(StepCache):
    """Adaptive residual reuse: the more the residual changes (and the more motion), the sooner it is recomputed."""

    name, options = "adacache", ("motion_weight", "growth_weight")

    def __init__(self, codebook: tuple[tuple[float, int], ...] = DEFAULT_CODEBOOK, motion_weight: float = 1.0,
                 growth_weight: float = 1.0):
        super().__init__()
        if not codebook or codebook[-1][0] != float("inf") or any(k < 1 for _, k in codebook):
            raise ValueError("AdaCache codebook must end with an infinite bound and map to >= 1 steps")
        self.codebook, self.motion_weight, self.growth_weight = codebook, motion_weight, growth_weight

    def schedule(self, rate: float) -> int:
        """Steps until the next computation for a regularised change rate."""
        return next(steps for bound, steps in self.codebook if rate <= bound)

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        st = self.branch_state
        if "residual" in st and self.index < st["next"] and not self.boundary_step:
            return x + st["residual"], True
        out = stack_forward(x, c, ctx)
        residual = out - x
        m = motion(noisy(residual, ctx)).item()  # rates and motion over the noisy chunk only
        if "residual" in st:
            rate = relative_l1(noisy(residual, ctx), noisy(st["residual"], ctx)).item() / (self.index - st["step"])
            rate *= 1 + self.motion_weight * m + self.growth_weight * max(m - st["motion"], 0.0)
            st["next"] = self.index + self.schedule(rate)
        else:
            st["next"] = self.index + 1
        st.update(residual=residual, step=self.index, motion=m)
        return out, False
