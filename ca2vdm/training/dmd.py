"""The losses of few-step distillation (``train/distill.py``).

* :func:`trajectory_loss` (stage 1, ODE regression, one teacher-forcing pass over a recorded clip): from a point of
  the teacher's recorded trajectory at the student's time t_j, one Euler step of the student must land on the
  trajectory's point at t_{j+1}: its velocity is regressed onto ``(x_{j+1} - x_j) / (t_{j+1} - t_j)``. The student's
  sampler (Euler over its own times) then follows the teacher's trajectories; the last step's target is the teacher's
  clean chunk.
* :func:`dmd_loss` (stage 2, DMD, Yin et al. 2024; Self-Forcing, arXiv 2506.08009): a window of the student's own
  rollout is noised to a random time per chunk; a frozen teacher, guided (the real score), and a critic trained on the
  student's samples (the fake score) each predict the clean window; their difference, normalised by how far the real
  prediction is from the window, is the gradient of the divergence between the student's distribution and the
  teacher's. The loss ``0.5 * |x - stop_grad(x - grad)|^2`` hands exactly that gradient to the student's samples.
* :func:`flow_loss`: the critic's, the ordinary flow-matching loss on the student's samples.

The scores are velocity functions ``(noisy, t) -> v`` (:data:`Velocity`): in training each chunk is read with the
context the student had (:func:`~ca2vdm.training.distill_window.window_velocity`), a target consistent with the
rolled-out context. Means are per chunk, then over chunks, as in the flow loss.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.sampling.flow import perturb
from ca2vdm.training.losses import chunk_means, chunk_terms, frame_chunks, teacher_forcing_velocity

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (noisy (B, C, T, H, W), t (B, K)) -> velocity


def trajectory_loss(model: torch.nn.Module, points: torch.Tensor, times: list[float], labels: torch.Tensor | None,
                    chunks: list[tuple[int, int]], cond_noise: float, generator: torch.Generator | None = None, *,
                    step: torch.Tensor | None = None, cond_eps: torch.Tensor | None = None,
                    text: TextEmbeddings | None = None) -> torch.Tensor:
    """ODE regression on recorded trajectories. points: (B, P, C, T, H, W), the clip at the student's ``times``
    (P of them, from 1 down to 0; ``points[:, -1]`` is the teacher's clip). Each chunk k of sample b starts at the
    point of its own random step ``step[b, k]`` in 0 .. P - 2; the clean clip conditions the later chunks (perturbed
    with ``cond_eps`` (B, C, Tc, H, W) to ``cond_noise``). ``step`` and ``cond_eps`` replace the random draws
    (drawn in that order). ``text``: a text model's prompts."""
    B, P, device = points.shape[0], points.shape[1], points.device
    num_clean = chunks[-1][0]
    if step is None:
        step = torch.randint(P - 1, (B, len(chunks)), generator=generator, device=device)  # (B, K)
    if cond_eps is None:
        cond_eps = torch.randn((B, points.shape[2], num_clean, *points.shape[4:]), generator=generator,
                               device=device, dtype=points.dtype)
    frame_step = step[:, frame_chunks(chunks, device)]  # (B, T)
    ts = torch.tensor(times, device=device, dtype=points.dtype)
    start = torch.take_along_dim(points, frame_step[:, None, None, :, None, None], dim=1)[:, 0]  # (B, C, T, H, W)
    end = torch.take_along_dim(points, frame_step[:, None, None, :, None, None] + 1, dim=1)[:, 0]
    dt = (ts[frame_step + 1] - ts[frame_step])[:, None, :, None, None]  # (B, 1, T, 1, 1), negative
    pred = teacher_forcing_velocity(model, points[:, -1, :, :num_clean], start, ts[frame_step], labels, cond_noise,
                                    cond_eps, text)
    return chunk_terms((pred.float() - ((end - start) / dt).float()).square(), chunks).mean()


def dmd_gradient(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor,
                 chunks: list[tuple[int, int]]) -> torch.Tensor:
    """DMD's gradient on the student's clip x (B, C, T, H, W): ``(x0_fake - x0_real) / mean|x - x0_real|``, the mean
    taken over each chunk of each sample (its own noise time), so every chunk's step is scale-free. A chunk the real
    score already equals (scale 0) gets no step; NaN or infinite scores stay so, for the loop's non-finite check
    (``train.nonfinite``) to stop on them: the loss used to be exactly 0 with a NaN guidance."""
    scale = chunk_means((x - x0_real).abs(), chunks)[:, frame_chunks(chunks, x.device)]  # (B, T)
    scale = scale[:, None, :, None, None]  # (B, 1, T, 1, 1)
    return torch.where(scale == 0, 0.0, (x0_fake - x0_real) / scale)


def dmd_loss(x: torch.Tensor, real: Velocity, fake: Velocity, chunks: list[tuple[int, int]],
             generator: torch.Generator | None = None, *, t_range: tuple[float, float] = (0.02, 0.98),
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's DMD loss on the student's clip x (B, C, T, H, W; gradients reach the student through x only).

    Chunk k of sample b is noised to ``t[b, k]`` (uniform in ``t_range``) with ``noise``. Real score: ``real(noisy,
    t)``, the teacher's guided velocity; fake score: ``fake(noisy, t)``, the critic's; each reads the chunks with the
    context the student had (:func:`~ca2vdm.training.distill_window.window_velocity`), under no_grad. ``t`` and
    ``noise`` replace the random draws (drawn in that order)."""
    t, noise, noisy = _noised(x.detach(), chunks, generator, t_range, t, noise)
    with torch.no_grad():
        clip = x.detach()
        to_x0 = t[:, frame_chunks(chunks, x.device)][:, None, :, None, None].to(x.dtype)  # (B, 1, T, 1, 1)
        grad = dmd_gradient(clip, noisy - to_x0 * real(noisy, t), noisy - to_x0 * fake(noisy, t), chunks)
    return 0.5 * chunk_terms((x.float() - (clip - grad).float()).square(), chunks).mean()


def flow_loss(x: torch.Tensor, velocity: Velocity, chunks: list[tuple[int, int]],
              generator: torch.Generator | None = None, *, t_range: tuple[float, float] = (0.02, 0.98),
              t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The critic's loss: flow matching on the student's clip x (B, C, T, H, W, detached), chunk k of sample b noised
    to ``t[b, k]`` (uniform in ``t_range``) with ``noise``; ``velocity(noisy, t)`` is the critic's (with gradients).
    The mean over chunks of each chunk's mean squared error."""
    x = x.detach()
    t, noise, noisy = _noised(x, chunks, generator, t_range, t, noise)
    return chunk_terms((velocity(noisy, t).float() - (noise - x).float()).square(), chunks).mean()


def _noised(x: torch.Tensor, chunks: list[tuple[int, int]], generator: torch.Generator | None,
            t_range: tuple[float, float], t: torch.Tensor | None, noise: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t (B, K), noise, x noised chunk by chunk to t): random draws where not given, t first."""
    if t is None:
        low, high = t_range
        t = low + (high - low) * torch.rand((x.shape[0], len(chunks)), generator=generator, device=x.device)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    t_frames = t[:, frame_chunks(chunks, x.device)]  # (B, T)
    return t, noise, perturb(x, noise, t_frames[:, None, :, None, None].to(x.dtype))
