"""Rectified-flow diffusion: schedule, causal training loss and the Euler sampler.

Convention: ``x_t = (1 - t) * x_0 + t * noise`` with t in [0, 1] (t = 1 is pure noise); the model predicts the
velocity ``noise - x_0``. Conditioning frames are clean (t = 0) but lightly perturbed to ``x_{t_p}`` with
``t_p = cond_noise`` while the model is still told t = 0 (Ca2-VDM's prefix perturbation), in training and at
inference alike.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# A denoiser maps (x_t (B, C, L, H, W), t (scalar float), step index) to a velocity of x_t's shape.
Denoiser = Callable[[torch.Tensor, float, int], torch.Tensor]


def timesteps(steps: int, shift: float = 1.0) -> list[float]:
    """``steps + 1`` times from 1 down to 0, warped by ``shift`` (t' = s t / (1 + (s - 1) t))."""
    ts = [1 - i / steps for i in range(steps + 1)]
    return [shift * t / (1 + (shift - 1) * t) for t in ts]


def perturb(x0: torch.Tensor, noise: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``(1 - t) x0 + t noise``; t a float or a tensor broadcastable to x0."""
    return (1 - t) * x0 + t * noise


def sample(denoise: Denoiser, noise: torch.Tensor, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Euler integration of the flow from t=1 (``noise``) to t=0; one ``denoise`` call per step."""
    ts = timesteps(steps, shift)
    x = noise
    for i in range(steps):
        x = x + (ts[i + 1] - ts[i]) * denoise(x, ts[i], i)
    return x


def causal_flow_loss(model: torch.nn.Module, video: torch.Tensor, labels: torch.Tensor | None, num_cond: int,
                     num_noisy: int, cond_noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow-matching loss on the noisy chunk that follows ``num_cond`` clean conditioning frames.

    video: (B, C, T, H, W) with T >= num_cond + num_noisy; frames after the noisy chunk are dropped.
    Noise times are logit-normal (SD3), one per sample; the loss is masked to the noisy frames.
    """
    x0 = video[:, :, :num_cond + num_noisy]
    B, T = x0.shape[0], x0.shape[2]
    device = x0.device
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    t = torch.sigmoid(torch.randn(B, generator=generator, device=device))  # (B,)
    t_frames = torch.zeros(B, T, device=device)
    t_frames[:, num_cond:] = t[:, None]
    noise_level = torch.full((B, T), cond_noise, device=device)  # conditioning: perturbed, told t=0
    noise_level[:, num_cond:] = t[:, None]
    x_t = perturb(x0, noise, noise_level[:, None, :, None, None].to(x0.dtype))
    pred = model(x_t, t_frames, labels, num_cond_frames=num_cond)
    target = noise - x0
    return F.mse_loss(pred[:, :, num_cond:].float(), target[:, :, num_cond:].float())


def guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``v_uncond + scale * (v_cond - v_uncond)``."""
    return v_uncond + scale * (v_cond - v_uncond)
