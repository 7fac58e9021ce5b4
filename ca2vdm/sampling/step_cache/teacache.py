"""TeaCache (Liu et al., arXiv 2411.19108): skip the block stack while the modulated input barely changes.

At every denoising step the indicator is the first block's normalised, timestep-modulated input ``m_t`` (the
noisy chunk's tokens only, in every cache mode). Its relative L1 change ``d = mean|m_t - m_prev| / mean|m_prev|``
is rescaled by a polynomial fitted per checkpoint (``ca2vdm calibrate``) to predict the change of the
stack's output, and accumulated. While the sum stays below ``threshold`` the stack is skipped and its last residual
(output - input) is added instead; otherwise the stack runs, its residual is stored and the sum resets. The first
and last steps are always computed. Rescaled changes are clamped at 0, so ``threshold=0`` computes every step.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ca2vdm.config.step_caches import TeaCacheConfig
from ca2vdm.models.blocks import StackCall
from ca2vdm.sampling.step_cache.base import Compute, StepCache, relative_l1
from ca2vdm.sampling.step_cache.registry import register

IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0)  # poly(d) = d: used when a checkpoint has no calibration
PAIRS_PER_COEFFICIENT = 10  # fewer (input, output change) pairs per fitted coefficient than this: warn


@dataclass
class TeaState:
    """One branch's TeaCache state within a chunk."""
    modulated: torch.Tensor | None = None  # the previous step's modulated input
    residual: torch.Tensor | None = None   # the last computed stack residual
    acc: float = 0.0                       # accumulated rescaled change since the last computed step


@register
class TeaCache(StepCache):
    """Training-free step skipping on the accumulated, rescaled change of the modulated input."""

    config_type, State = TeaCacheConfig, TeaState

    def __init__(self, config: TeaCacheConfig | None = None, *, coefficients: tuple[float, ...] = IDENTITY,
                 **options):
        super().__init__(config, **options)
        self.rescale = np.poly1d(coefficients)

    @classmethod
    def from_calibration(cls, calibration: Mapping[str, list[float]], source: str,
                         config: TeaCacheConfig | None) -> TeaCache:
        """TeaCache with the checkpoint's fitted polynomial; without one, the identity, and a warning that says how
        to calibrate."""
        coefficients = calibration.get("teacache_coefficients")
        if coefficients is None:
            warnings.warn(f"{source} has no TeaCache calibration, so step cache teacache rescales with the generic "
                          "poly(d) = d and its threshold means little; calibrate once with: "
                          f"ca2vdm calibrate --checkpoint {source}", stacklevel=2)
            coefficients = IDENTITY
        return cls(config, coefficients=tuple(coefficients))

    def should_compute(self, modulated: torch.Tensor) -> bool:
        """The TeaCache rule for the current step; updates the branch's accumulator and previous input."""
        st = self.branch_state
        prev, st.modulated = st.modulated, modulated
        if prev is None or self.boundary_step or st.residual is None:
            st.acc = 0.0
            return True
        change = relative_l1(modulated, prev).item()  # one host sync per step: the decision is control flow
        st.acc += max(0.0, float(self.rescale(change)))
        if st.acc < self.config.threshold:
            return False
        st.acc = 0.0
        return True

    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        return self.reuse_or_compute(compute, call, reuse=not self.should_compute(call.modulated_input()))


@dataclass
class RecorderState:
    modulated: torch.Tensor | None = None
    out: torch.Tensor | None = None


class TeaCacheRecorder(StepCache):
    """Computes every step and records (input change, output change) pairs for calibration."""

    State = RecorderState

    def __init__(self):
        super().__init__()
        self.pairs: list[tuple[float, float]] = []

    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        modulated = call.modulated_input()
        out = compute()
        st = self.branch_state
        if st.modulated is not None:
            self.pairs.append((relative_l1(modulated, st.modulated).item(),
                               relative_l1(call.noisy(out), st.out).item()))
        st.modulated, st.out = modulated, call.noisy(out)
        return out, False


def fit_polynomial(pairs: list[tuple[float, float]], degree: int = 4) -> tuple[list[float], float]:
    """Least-squares polynomial mapping input change to output change; returns (coefficients, R^2). ValueError when
    the pairs cannot determine it (fewer distinct input changes than coefficients: the coefficients would be
    arbitrary, e.g. near 1e34 for degree 30 from 15 pairs); a warning when there are fewer than
    ``PAIRS_PER_COEFFICIENT`` pairs per coefficient (the fit then chases noise)."""
    distinct = len({x for x, _ in pairs})
    if degree < 0 or distinct < degree + 1:
        raise ValueError(f"a degree-{degree} polynomial needs at least {degree + 1} distinct (input, output change) "
                         f"pairs, got {distinct}; sample more (seeds or chunks) or lower the degree")
    if len(pairs) < PAIRS_PER_COEFFICIENT * (degree + 1):
        warnings.warn(f"fitting a degree-{degree} polynomial from only {len(pairs)} (input, output change) pairs: the "
                      f"coefficients are unreliable; sample more (at least {PAIRS_PER_COEFFICIENT * (degree + 1)} "
                      "pairs: sample more seeds or chunks) or lower the degree", stacklevel=2)
    x, y = np.array(pairs).T
    coefficients = np.polyfit(x, y, degree)
    residual = y - np.polyval(coefficients, x)
    r2 = 1 - residual.var() / max(y.var(), 1e-12)
    return coefficients.tolist(), float(r2)
