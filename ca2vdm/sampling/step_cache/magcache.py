"""MagCache (Ma et al., arXiv 2506.09045): skip the block stack while the calibrated residual magnitudes stay flat.

The "magnitude law": the ratio of the norms of successive residuals (stack output - input),
``gamma_t = mean over tokens of ||r_t|| / ||r_{t-1}||``, follows nearly the same curve for every input of a
model, so one calibration run (``ca2vdm calibrate --policy magcache``) records it per step. While
sampling, each step after the last computed one multiplies ``ratio *= gamma_t`` and adds ``|1 - ratio|`` to the
error; the stack is skipped (the last residual reused unchanged) while that error stays below ``threshold`` and at
most ``max_skip`` steps in a row were skipped. The first ``retention`` fraction of the steps and the last step
always compute. ``threshold=0`` computes every step.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ca2vdm.config.step_caches import MagCacheConfig
from ca2vdm.models.blocks import StackCall
from ca2vdm.sampling.step_cache.base import Compute, StepCache
from ca2vdm.sampling.step_cache.registry import register


def magnitude_ratio(residual: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ||r|| / ||r_prev|| (norms over the last, channel dimension), a 0-dim tensor."""
    return (residual.norm(dim=-1) / previous.norm(dim=-1).clamp_min(1e-12)).mean()


def resample_ratios(ratios: list[float], steps: int) -> list[float]:
    """A calibrated per-step curve for another number of steps: linear in sampling progress; unchanged if equal."""
    if len(ratios) == steps:
        return list(ratios)
    grid = np.linspace(0.0, 1.0, len(ratios))
    return np.interp(np.linspace(0.0, 1.0, steps), grid, ratios).tolist()


@dataclass
class MagState:
    """One branch's MagCache state within a chunk."""
    residual: torch.Tensor | None = None  # the last computed stack residual
    ratio: float = 1.0                    # product of the calibrated ratios since the last computed step
    error: float = 0.0                    # accumulated |1 - ratio|
    skipped: int = 0                      # steps skipped in a row


@register
class MagCache(StepCache):
    """Residual reuse gated by the accumulated error of the calibrated magnitude ratios."""

    config_type, State = MagCacheConfig, MagState

    def __init__(self, ratios: list[float], config: MagCacheConfig | None = None, **options):
        super().__init__(config, **options)
        if not ratios:
            raise ValueError("MagCache needs the calibrated magnitude ratios (ca2vdm calibrate "
                             "--policy magcache)")
        self.ratios = list(ratios)

    @classmethod
    def from_calibration(cls, calibration: Mapping[str, list[float]], source: str,
                         config: MagCacheConfig | None) -> MagCache:
        """MagCache with the checkpoint's calibrated ratios; ValueError (with the command) when it has none."""
        if not calibration.get("magcache_ratios"):
            raise ValueError(f"{source} has no MagCache calibration; calibrate it once with: "
                             f"ca2vdm calibrate --policy magcache --checkpoint {source}")
        return cls(calibration["magcache_ratios"], config)

    def forced_step(self) -> bool:
        """Steps that always compute: those in the retention phase and the last."""
        return self.index < self.config.retention * self.num_steps or self.index == self.num_steps - 1

    def should_compute(self) -> bool:
        """The MagCache rule for the current step; updates the branch's accumulated ratio, error and skip count."""
        st = self.branch_state
        if st.residual is None or self.forced_step():
            st.ratio, st.error, st.skipped = 1.0, 0.0, 0
            return True
        st.ratio *= resample_ratios(self.ratios, self.num_steps)[self.index]
        st.error += abs(1.0 - st.ratio)
        st.skipped += 1
        if st.error < self.config.threshold and st.skipped <= self.config.max_skip:
            return False
        st.ratio, st.error, st.skipped = 1.0, 0.0, 0
        return True

    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        return self.reuse_or_compute(compute, call, reuse=not self.should_compute())


@dataclass
class RecorderState:
    residual: torch.Tensor | None = None


class MagCacheRecorder(StepCache):
    """Computes every step and records, per step index, the magnitude ratio of the noisy chunk's residuals."""

    State = RecorderState

    def __init__(self):
        super().__init__()
        self.samples: dict[int, list[float]] = {}  # step index -> ratios over the chunks seen

    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        out = compute()
        residual, st = call.noisy(out - call.x), self.branch_state
        if st.residual is not None:
            self.samples.setdefault(self.index, []).append(magnitude_ratio(residual, st.residual).item())
        st.residual = residual
        return out, False

    def curve(self) -> tuple[list[float], list[float]]:
        """(mean ratio, standard deviation) per step; step 0 has no predecessor and gets ratio 1."""
        steps = max(self.samples) + 1 if self.samples else 0
        means = [1.0] + [float(np.mean(self.samples[i])) for i in range(1, steps)]
        stds = [0.0] + [float(np.std(self.samples[i])) for i in range(1, steps)]
        return means, stds
