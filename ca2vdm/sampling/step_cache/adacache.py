"""AdaCache (Kahatapitiya et al., arXiv 2411.02397): a per-video schedule of residual reuse, with MoReg.

At a computed step the block stack's residual ``r_t`` (output - input; the all-blocks setting of AdaCache) is
compared with the one of the previous computed step: ``c = |r_t - r_prev|_1 / |r_prev|_1 / steps_between``.
Motion Regularisation scales it: with ``m`` the mean change of the residual between neighbouring frames (relative
to its magnitude) and ``g`` the growth of ``m`` since the last computed step, ``c' = c * (1 + motion_weight * m
+ growth_weight * max(g, 0))``, so high-motion chunks recompute more often. A codebook maps ``c'`` to the number of
steps until the next computation; in between, the stored residual is reused.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ca2vdm.config.step_caches import AdaCacheConfig
from ca2vdm.models.blocks import StackCall
from ca2vdm.sampling.step_cache.base import Compute, StepCache, relative_l1
from ca2vdm.sampling.step_cache.registry import register

# (upper bound of the regularised change rate, steps until the next computation); the last bound is +inf.
DEFAULT_CODEBOOK = ((0.03, 4), (0.06, 3), (0.12, 2), (float("inf"), 1))
OFF = ((float("inf"), 1),)  # compute every step


def motion(residual: torch.Tensor) -> torch.Tensor:
    """Mean |r[:, t+1] - r[:, t]| / mean |r| over the frames of a (B, T, S, D) residual (0 for one frame)."""
    if residual.shape[1] < 2:
        return residual.new_zeros(())
    return relative_l1(residual[:, 1:], residual[:, :-1])


@dataclass
class AdaState:
    """One branch's AdaCache state within a chunk."""
    residual: torch.Tensor | None = None  # the last computed stack residual
    step: int = 0                         # the step it was computed at
    motion: float = 0.0                   # its motion
    next: int = 0                         # the next step to compute


@register
class AdaCache(StepCache):
    """Adaptive residual reuse: the more the residual changes (and the more motion), the sooner it is recomputed."""

    config_type, State = AdaCacheConfig, AdaState

    def __init__(self, config: AdaCacheConfig | None = None, *,
                 codebook: tuple[tuple[float, int], ...] = DEFAULT_CODEBOOK, **options):
        super().__init__(config, **options)
        if not codebook or codebook[-1][0] != float("inf") or any(k < 1 for _, k in codebook):
            raise ValueError("AdaCache codebook must end with an infinite bound and map to >= 1 steps")
        self.codebook = codebook

    def schedule(self, rate: float) -> int:
        """Steps until the next computation for a regularised change rate (1 for a rate that is not a number)."""
        return next((steps for bound, steps in self.codebook if rate <= bound), 1)

    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        st = self.branch_state
        if st.residual is not None and self.index < st.next and not self.boundary_step:
            return call.x + st.residual, True
        out = compute()
        residual = out - call.x
        m = motion(call.noisy(residual)).item()  # rates and motion over the noisy chunk only
        if st.residual is not None:
            rate = relative_l1(call.noisy(residual), call.noisy(st.residual)).item() / (self.index - st.step)
            rate *= 1 + self.config.motion_weight * m + self.config.growth_weight * max(m - st.motion, 0.0)
            st.next = self.index + self.schedule(rate)
        else:
            st.next = self.index + 1
        st.residual, st.step, st.motion = residual, self.index, m
        return out, False
