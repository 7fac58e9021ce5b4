"""TeaCache (Liu et al., arXiv 2411.19108): skip the block stack while the modulated input barely changes.

At every denoising step the indicator is the first block's normalised, timestep-modulated input ``m_t`` (the
noisy chunk's tokens only, in every cache mode). Its relative L1 change ``d = mean|m_t - m_prev| / mean|m_prev|``
is rescaled by a polynomial fitted per checkpoint (``scripts/calibrate_teacache.py``) to predict the change of the
stack's output, and accumulated. While the sum stays below ``threshold`` the stack is skipped and its last residual
(output - input) is added instead; otherwise the stack runs, its residual is stored and the sum resets. The first
and last steps are always computed. Rescaled changes are clamped at 0, so ``threshold=0`` computes every step.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .base import StackFn, StepCache, noisy, relative_l1
from .registry import register

IDENTITY = (0.0, 0.0, 0.0, 1.0, 0.0)  # poly(d) = d: used when a checkpoint has no calibration
PAIRS_PER_COEFFICIENT = 10  # fewer (input, output change) pairs per fitted coefficient than this: warn


@register
class TeaCache(StepCache):
    """Training-free step skipping on the accumulated, rescaled change of the modulated input."""

    name, options = "teacache", ("threshold",)

    @classmethod
    def from_checkpoint(cls, metadata: dict, checkpoint: str, **options) -> "TeaCache":
        """TeaCache with the checkpoint's fitted polynomial; without one, the identity, and a warning that says
        how to calibrate."""
        coefficients = metadata.get("teacache_coefficients")
        if coefficients is None:
            warnings.warn(f"{checkpoint} has no TeaCache calibration, so --step-cache teacache rescales with the "
                          "generic poly(d) = d and its threshold means little; calibrate once with: python "
                          f"scripts/calibrate_teacache.py --checkpoint {checkpoint}", stacklevel=2)
            coefficients = IDENTITY
        return cls(coefficients=tuple(coefficients), **options)

    def __init__(self, threshold: float = 0.1, coefficients: tuple[float, ...] = IDENTITY):
        super().__init__()
        if threshold < 0:
            raise ValueError(f"TeaCache threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.rescale = np.poly1d(coefficients)

    def should_compute(self, modulated: torch.Tensor) -> bool:
        """The TeaCache rule for the current step; updates the branch's accumulator and previous input."""
        st = self.branch_state
        prev = st.get("modulated")
        st["modulated"] = modulated
        if prev is None or self.boundary_step or "residual" not in st:
            st["acc"] = 0.0
            return True
        change = relative_l1(modulated, prev).item()  # one host sync per step: the decision is control flow
        st["acc"] += max(0.0, float(self.rescale(change)))
        if st["acc"] < self.threshold:
            return False
        st["acc"] = 0.0
        return True

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        modulated = self.model.stack.blocks[0].modulated_input(noisy(x, ctx), noisy(c, ctx))
        if not self.should_compute(modulated):
            return x + self.branch_state["residual"], True
        out = stack_forward(x, c, ctx)
        self.branch_state["residual"] = out - x
        return out, False


class TeaCacheRecorder(StepCache):
    """Computes every step and records (input change, output change) pairs for calibration."""

    def __init__(self):
        super().__init__()
        self.pairs: list[tuple[float, float]] = []

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        modulated = self.model.stack.blocks[0].modulated_input(noisy(x, ctx), noisy(c, ctx))
        out = stack_forward(x, c, ctx)
        st = self.branch_state
        if "modulated" in st:
            self.pairs.append((relative_l1(modulated, st["modulated"]).item(),
                               relative_l1(noisy(out, ctx), st["out"]).item()))
        st["modulated"], st["out"] = modulated, noisy(out, ctx)
        return out, False


def fit_polynomial(pairs: list[tuple[float, float]], degree: int = 4) -> tuple[list[float], float]:
    """Least-squares polynomial mapping input change to output change; returns (coefficients, R^2). Warns when
    there are fewer than ``PAIRS_PER_COEFFICIENT`` pairs per coefficient (the fit then chases noise)."""
    if len(pairs) < PAIRS_PER_COEFFICIENT * (degree + 1):
        warnings.warn(f"fitting a degree-{degree} polynomial from only {len(pairs)} (input, output change) pairs: the "
                      f"coefficients are unreliable; sample more (at least {PAIRS_PER_COEFFICIENT * (degree + 1)} "
                      "pairs: raise --seeds or --chunks) or lower --degree", stacklevel=2)
    x, y = np.array(pairs).T
    coefficients = np.polyfit(x, y, degree)
    residual = y - np.polyval(coefficients, x)
    r2 = 1 - residual.var() / max(y.var(), 1e-12)
    return coefficients.tolist(), float(r2)
