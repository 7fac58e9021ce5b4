"""Rectified flow: the schedule, the Euler sampler and classifier-free guidance.

Convention: ``x_t = (1 - t) * x_0 + t * noise`` with t in [0, 1] (t = 1 is pure noise); the model predicts the
velocity ``noise - x_0``. Conditioning frames are clean (t = 0) but lightly perturbed to ``x_{t_p}`` with
``t_p = cond_noise`` while the model is still told t = 0 (Ca2-VDM's prefix perturbation), in training
(:mod:`ca2vdm.training.losses`) and at inference alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch

# A denoiser maps (x_t (B, C, L, H, W), t (scalar float), step index) to a velocity of x_t's shape.
Denoiser = Callable[[torch.Tensor, float, int], torch.Tensor]


def timesteps(steps: int, shift: float = 1.0) -> list[float]:
    """``steps + 1`` times from 1 down to 0, warped by ``shift`` (t' = s t / (1 + (s - 1) t))."""
    ts = [1 - i / steps for i in range(steps + 1)]
    return [shift * t / (1 + (shift - 1) * t) for t in ts]


def perturb(x0: torch.Tensor, noise: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``(1 - t) x0 + t noise``; t a float or a tensor broadcastable to x0."""
    return (1 - t) * x0 + t * noise


def sample(denoise: Denoiser, x: torch.Tensor, steps: int, shift: float = 1.0, start_t: float = 1.0, *,
           times: Sequence[float] | None = None) -> torch.Tensor:
    """Euler integration of the flow from ``x`` at t=``start_t`` (1: pure noise) to t=0; one ``denoise`` call per
    step. With ``start_t`` < 1 the schedule is compressed into [0, start_t] (SDEdit from partly noised frames).
    ``times``: an explicit schedule instead (``steps + 1`` times, from x's time down to the last, e.g. a piece of a
    trajectory, or a few-step student stopped early: ``[*ts[:k + 1], 0]`` returns its prediction of x_0 at step k)."""
    ts = [start_t * t for t in timesteps(steps, shift)] if times is None else list(times)
    for i in range(len(ts) - 1):
        x = x + (ts[i + 1] - ts[i]) * denoise(x, ts[i], i)
    return x


def guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``v_uncond + scale * (v_cond - v_uncond)``."""
    return v_uncond + scale * (v_cond - v_uncond)
