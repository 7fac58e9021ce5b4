"""MagCache (Ma et al., arXiv 2506.09045): skip the block stack while the calibrated residual magnitudes stay flat.

The "magnitude law": the ratio of the norms of successive residuals (stack output - input),
``gamma_t = mean over tokens of ||r_t|| / ||r_{t-1}||``, follows nearly the same curve for every input of a
model, so one calibration run (``scripts/calibrate_teacache.py --policy magcache``) records it per step. While
sampling, each step after the last computed one multiplies ``ratio *= gamma_t`` and adds ``|1 - ratio|`` to the
error; the stack is skipped (the last residual reused unchanged) while that error stays below ``threshold`` and at
most ``max_skip`` steps in a row were skipped. The first ``retention`` fraction of the steps and the last step
always compute. ``threshold=0`` computes every step.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import StackFn, StepCache, noisy
from .registry import register


def magnitude_ratio(residual: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ||r|| / ||r_prev|| (norms over the last, channel dimension), a 0-dim tensor."""
    return (residual.norm(dim=-1) / previous.norm(dim=-1).clamp_min(1e-12)).mean()


def resample_ratios(ratios: list[float], steps: int) -> list[float]:
    """A calibrated per-step curve for another number of steps: linear in sampling progress; unchanged if equal."""
    if len(ratios) == steps:
        return list(ratios)
    grid = np.linspace(0.0, 1.0, len(ratios))
    return np.interp(np.linspace(0.0, 1.0, steps), grid, ratios).tolist()


@register
class MagCache(StepCache):
    """Residual reuse gated by the accumulated error of the calibrated magnitude ratios."""

    name, options = "magcache", ("threshold", "max_skip", "retention")

    @classmethod
    def from_checkpoint(cls, metadata: dict, checkpoint: str, **options) -> "MagCache":
        """MagCache with the checkpoint's calibrated ratios; ValueError (with the command) when it has none."""
        if not metadata.get("magcache_ratios"):
            raise ValueError(f"{checkpoint} has no MagCache calibration; calibrate it once with: python "
                             f"scripts/calibrate_teacache.py --policy magcache --checkpoint {checkpoint}")
        return cls(metadata["magcache_ratios"], **options)

    def __init__(self, ratios: list[float], threshold: float = 0.06, max_skip: int = 3, retention: float = 0.2):
        super().__init__()
        if threshold < 0 or max_skip < 0 or not 0 <= retention <= 1:
            raise ValueError("MagCache needs threshold >= 0, max_skip >= 0 and retention in [0, 1]")
        if not ratios:
            raise ValueError("MagCache needs the calibrated magnitude ratios (scripts/calibrate_teacache.py "
                             "--policy magcache)")
        self.ratios, self.threshold, self.max_skip, self.retention = list(ratios), threshold, max_skip, retention

    def forced_step(self) -> bool:
        """Steps that always compute: those in the retention phase and the last."""
        return self.index < self.retention * self.num_steps or self.index == self.num_steps - 1

    def should_compute(self) -> bool:
        """The MagCache rule for the current step; updates the branch's accumulated ratio, error and skip count."""
        st = self.branch_state
        if "residual" not in st or self.forced_step():
            st.update(ratio=1.0, error=0.0, skipped=0)
            return True
        gamma = resample_ratios(self.ratios, self.num_steps)[self.index]
        st["ratio"] *= gamma
        st["error"] += abs(1.0 - st["ratio"])
        st["skipped"] += 1
        if st["error"] < self.threshold and st["skipped"] <= self.max_skip:
            return False
        st.update(ratio=1.0, error=0.0, skipped=0)
        return True

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        if not self.should_compute():
            return x + self.branch_state["residual"], True
        out = stack_forward(x, c, ctx)
        self.branch_state["residual"] = out - x
        return out, False


class MagCacheRecorder(StepCache):
    """Computes every step and records, per step index, the magnitude ratio of the noisy chunk's residuals."""

    def __init__(self):
        super().__init__()
        self.samples: dict[int, list[float]] = {}  # step index -> ratios over the chunks seen

    def run_stack(self, stack_forward: StackFn, x: torch.Tensor, c: torch.Tensor, ctx) -> tuple[torch.Tensor, bool]:
        out = stack_forward(x, c, ctx)
        residual, st = noisy(out - x, ctx), self.branch_state
        if "residual" in st:
            self.samples.setdefault(self.index, []).append(magnitude_ratio(residual, st["residual"]).item())
        st["residual"] = residual
        return out, False

    def curve(self) -> tuple[list[float], list[float]]:
        """(mean ratio, standard deviation) per step; step 0 has no predecessor and gets ratio 1."""
        steps = max(self.samples) + 1 if self.samples else 0
        means = [1.0] + [float(np.mean(self.samples[i])) for i in range(1, steps)]
        stds = [0.0] + [float(np.std(self.samples[i])) for i in range(1, steps)]
        return means, stds
