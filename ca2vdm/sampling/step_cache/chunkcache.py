"""ChunkCache (ours): a step schedule that an autoregressive generator calibrates from the chunks it already made.

Every chunk runs the same noise schedule on a similar input, so how well a skipped step can be forecast is much the
same from chunk to chunk. The first ``calibrate`` chunks compute every step and record, for every step ``i`` and
every pair of earlier steps ``k < j`` that could be the last two computed, the error of forecasting the block
stack's residual (output - input) at ``i`` by extrapolating linearly from ``r_k`` and ``r_j`` (TaylorSeer's
first order; ``k = -1``: only ``r_j`` is known and is reused as is):
``e[k, j, i] = mean|r_i - (r_j + (r_j - r_k) (i - j) / (j - k))| / mean_s mean|r_s|``.

Each later chunk then runs the schedule with the fewest computed steps whose recorded error, summed over its
skipped steps, stays within ``threshold`` (a shortest-path search over the 16 steps, :func:`plan`); the first and
last steps always compute. With guidance (``cfg_reuse=1``) every other computed step from the third on (never the
last) runs the conditional branch only, and the unconditional velocity is the conditional one plus the difference
kept from the last step that ran both (FasterCache's CFG-Cache without the frequency split).

The record follows the video: at every computed step the error the forecast would have made there is measured;
it replaces the recorded one by a moving average (weight ``momentum``), and the recorded errors of the steps
skipped since the last computed one are scaled by the same ratio. No offline calibration; the record lives on the
policy (a new policy per video starts from nothing; :meth:`reset` forgets it). ``threshold=0`` computes every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ca2vdm.config.step_caches import ChunkCacheConfig
from ca2vdm.models.blocks import StackCall
from ca2vdm.sampling.step_cache.base import Compute, StepCache
from ca2vdm.sampling.step_cache.registry import register

Errors = dict[tuple[int, int, int], float]  # (k, j, i) -> recorded forecast error of step i from steps k < j < i


def extrapolate(history: list[tuple[int, torch.Tensor]], index: int) -> torch.Tensor:
    """Linear forecast at ``index`` from the last two (step, residual) of ``history`` (the last one alone: reuse)."""
    (j, r_j) = history[-1]
    if len(history) < 2:
        return r_j
    (k, r_k) = history[-2]
    return r_j + (r_j - r_k) * ((index - j) / (j - k))


def plan(errors: Errors, num_steps: int, threshold: float, warmup: int = 1) -> list[int]:
    """The computed steps: the fewest (the first ``warmup`` and the last always among them) whose skipped steps'
    recorded errors sum to at most ``threshold``; among equally few, the smallest sum. Step 0 has anchors (-1, 0)."""
    if threshold <= 0 or warmup >= num_steps - 1:
        return list(range(num_steps))

    prefix = {}  # (k, j) -> [error of skipping steps j+1 .. i-1, forecast from (k, j), for i = j+1 .. num_steps-1]
    for j in range(num_steps):
        for k in range(-1, j):
            sums = [0.0]
            for s in range(j + 1, num_steps - 1):
                sums.append(sums[-1] + errors[(k, j, s)])
            prefix[(k, j)] = sums

    frontier = {(warmup - 2, warmup - 1): (0.0, list(range(warmup)))}  # last two computed -> (error, steps)
    for _ in range(num_steps):  # each round computes one more step: the last is reached within num_steps rounds
        done = [v for (k, j), v in frontier.items() if j == num_steps - 1 and v[0] <= threshold]
        if done:
            return min(done)[1]
        nxt: dict[tuple[int, int], tuple[float, list[int]]] = {}
        for (k, j), (cost, steps) in frontier.items():
            for i in range(j + 1, num_steps):
                total = cost + prefix[(k, j)][i - j - 1]
                if total <= threshold and total < nxt.get((j, i), (float("inf"),))[0]:
                    nxt[(j, i)] = (total, steps + [i])
        frontier = nxt
    return list(range(num_steps))  # unreachable for a finite threshold >= 0 (a step may always follow the last)


def forecast_errors(residuals: list[torch.Tensor]) -> Errors:
    """e[k, j, i] for every k < j < i (k = -1: reuse r_j) from one chunk's residuals, every step computed."""
    scale = torch.stack([r.abs().mean() for r in residuals]).mean().clamp_min(1e-12)
    n, errors = len(residuals), {}
    for j in range(n):
        for k in range(-1, j):
            history = [(j, residuals[j])] if k < 0 else [(k, residuals[k]), (j, residuals[j])]
            for i in range(j + 1, n):
                errors[(k, j, i)] = ((residuals[i] - extrapolate(history, i)).abs().mean() / scale).item()
    return errors


@dataclass
class History:
    """One guidance branch's last two computed steps in the current chunk: [(step, residual)]."""
    steps: list[tuple[int, torch.Tensor]] = field(default_factory=list)


@register
class ChunkCache(StepCache):
    """Skip the steps whose forecast error, recorded on earlier chunks of the same video, fits a budget."""

    config_type, State = ChunkCacheConfig, History

    def reset(self) -> None:
        """Forget the record (a new video)."""
        self.errors: Errors = {}
        self.scale = 0.0        # mean |residual| of the calibration chunks: the unit of the errors
        self.samples = 0        # calibration chunks folded into ``errors``
        self.chunk = -1         # chunks begun
        super().reset()

    def begin_chunk(self) -> None:
        super().begin_chunk()
        self.chunk += 1

    def _clear_chunk(self) -> None:
        super()._clear_chunk()
        self.schedule: list[int] = []  # computed steps of the current chunk (planned at its first step)
        self.cond_only: set[int] = set()  # steps that run the conditional branch alone
        self.guided = False               # this chunk's steps are guided (guide() was called)
        self.calibration: list[torch.Tensor] = []  # a calibrating chunk's residuals, one per step

    def calibrating(self) -> bool:
        """Whether the current chunk computes every step for the record."""
        recorded_steps = max(key[2] for key in self.errors) + 1 if self.errors else 0
        return self.chunk < self.config.calibrate or recorded_steps != self.num_steps

    def _plan(self) -> None:
        """At a chunk's first call: every step while calibrating, else the planned schedule."""
        if self.schedule:
            return
        c = self.config
        if self.calibrating():
            self.schedule, self.cond_only = list(range(self.num_steps)), set()
        else:
            self.schedule = plan(self.errors, self.num_steps, c.threshold, c.warmup)
            self.cond_only = set(self.schedule[2:-1:2]) if c.cfg_reuse and c.threshold > 0 else set()

    # -- guidance ---------------------------------------------------------------------------------------------
    def guide(self, both, cond, scale: float) -> torch.Tensor:
        self._plan()
        self.guided = True
        return self.guide_reusing_uncond(both, cond, scale, self.index in self.cond_only,
                                         keep=self.config.cfg_reuse and self.index in self.schedule)

    # -- the block stack --------------------------------------------------------------------------------------
    def run_stack(self, compute: Compute, call: StackCall) -> tuple[torch.Tensor, bool]:
        self._plan()
        groups = ["cond", "uncond"] if self.branch == "cond+uncond" else ["cond"]
        histories = [self.states[g].steps for g in groups]  # [(step, residual)]
        if self.index not in self.schedule and all(histories):
            return call.x + torch.cat([extrapolate(h, self.index) for h in histories]), True
        out = compute()
        residual = out - call.x
        every_row = self.branch == "cond+uncond" or not self.guided
        if every_row and self.calibrating():
            self.calibration.append(call.noisy(residual))
            if self.index == self.num_steps - 1 and len(self.calibration) == self.num_steps:
                self._fold(self.calibration)
        elif every_row and all(histories):
            self._learn(call.noisy(residual - torch.cat([extrapolate(h, self.index) for h in histories])),
                        [s for s, _ in histories[0]])
        for h, part in zip(histories, residual.chunk(len(groups))):
            h[:] = h[-1:] + [(self.index, part)]
        return out, False

    def _fold(self, residuals: list[torch.Tensor]) -> None:
        """Average a calibration chunk's forecast errors (and residual magnitude) into the record."""
        self.samples += 1
        self.scale += (torch.stack([r.abs().mean() for r in residuals]).mean().item() - self.scale) / self.samples
        for key, value in forecast_errors(residuals).items():
            self.errors[key] = self.errors.get(key, value) + (value - self.errors.get(key, value)) / self.samples

    def _learn(self, miss: torch.Tensor, anchors: list[int]) -> None:
        """Refresh the record from a computed step whose forecast would have missed by ``miss``: the recorded error
        of this step moves towards the measured one, and those of the steps skipped since the last computed one
        by the same ratio."""
        k, j = (anchors[-2] if len(anchors) > 1 else -1), anchors[-1]
        recorded = self.errors.get((k, j, self.index))
        if not recorded:
            return
        measured = miss.abs().mean().item() / max(self.scale, 1e-12)
        ratio = 1 + self.config.momentum * (measured / recorded - 1)
        for s in range(j + 1, self.index + 1):
            self.errors[(k, j, s)] *= ratio
