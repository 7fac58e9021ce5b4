"""The losses of few-step distillation (``train/distill.py``), each on whole clips in one teacher-forcing pass.

* :func:`trajectory_loss` (stage 1, ODE regression): from a point of the teacher's recorded trajectory at the
  student's time t_j, one Euler step of the student must land on the trajectory's point at t_{j+1}: its velocity is
  regressed onto ``(x_{j+1} - x_j) / (t_{j+1} - t_j)``. The student's sampler (Euler over its own times) then follows
  the teacher's trajectories; the last step's target is the teacher's clean chunk.
* :func:`dmd_loss` (stage 2, DMD, Yin et al. 2024; Self-Forcing, arXiv 2506.08009): the student's own clip is noised
  to a random time; a frozen teacher, guided (the real score), and a critic trained on the student's samples (the fake
  score) each predict the clean clip; their difference, normalised by how far the real prediction is from the clip,
  is the gradient of the divergence between the student's distribution and the teacher's. The loss
  ``0.5 * |x - stop_grad(x - grad)|^2`` hands exactly that gradient to the student's samples.
* The critic's loss is the ordinary flow-matching loss (:func:`~ca2vdm.training.losses.teacher_forcing_flow_loss`)
  on the student's samples, at the times DMD asks it about.

Every chunk of a clip is scored with the student's own previous chunks as its context (teacher forcing over the
rollout): a target consistent with the rolled-out context. Means are per chunk, then over chunks, as in the flow loss.
"""
from __future__ import annotations

import torch

from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.sampling.flow import guidance, perturb
from ca2vdm.training.losses import chunk_means, chunk_terms, frame_chunks, teacher_forcing_velocity


def trajectory_loss(model: torch.nn.Module, points: torch.Tensor, times: list[float], labels: torch.Tensor | None,
                    chunks: list[tuple[int, int]], cond_noise: float, generator: torch.Generator | None = None, *,
                    step: torch.Tensor | None = None, cond_eps: torch.Tensor | None = None) -> torch.Tensor:
    """ODE regression on recorded trajectories. points: (B, P, C, T, H, W), the clip at the student's ``times``
    (P of them, from 1 down to 0; ``points[:, -1]`` is the teacher's clip). Each chunk k of sample b starts at the
    point of its own random step ``step[b, k]`` in 0 .. P - 2; the clean clip conditions the later chunks (perturbed
    with ``cond_eps`` (B, C, Tc, H, W) to ``cond_noise``). ``step`` and ``cond_eps`` replace the random draws
    (drawn in that order)."""
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
                                    cond_eps)
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


def dmd_loss(x: torch.Tensor, labels: torch.Tensor | None, teacher: torch.nn.Module, critic: torch.nn.Module,
             chunks: list[tuple[int, int]], cond_noise: float, guidance_scale: float, null_label: int | None,
             generator: torch.Generator | None = None, *, t_range: tuple[float, float] = (0.02, 0.98),
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             cond_eps: torch.Tensor | None = None, text: TextEmbeddings | None = None,
             null_text: TextEmbeddings | None = None) -> torch.Tensor:
    """The generator's DMD loss on the student's clip x (B, C, T, H, W; gradients reach the student through x only).

    Chunk k of sample b is noised to ``t[b, k]`` (uniform in ``t_range``) with ``noise``; the clean clip (detached,
    perturbed with ``cond_eps``) conditions the later chunks. Real score: the teacher's prediction of the clean clip,
    guided by ``guidance_scale`` towards ``labels`` (against ``null_label``) or a text model's prompts ``text``
    (against ``null_text``, its empty prompt); fake score: the critic's, unguided. ``t``, ``noise`` and ``cond_eps``
    replace the random draws (drawn in that order)."""
    B, device, dtype = x.shape[0], x.device, x.dtype
    num_clean = chunks[-1][0]
    if t is None:
        low, high = t_range
        t = low + (high - low) * torch.rand((B, len(chunks)), generator=generator, device=device)  # (B, K)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
    if cond_eps is None:
        cond_eps = torch.randn((B, x.shape[1], num_clean, *x.shape[3:]), generator=generator, device=device,
                               dtype=dtype)
    t_frames = t[:, frame_chunks(chunks, device)]  # (B, T)
    with torch.no_grad():
        clip = x.detach()
        noisy = perturb(clip, noise, t_frames[:, None, :, None, None].to(dtype))
        v_fake = teacher_forcing_velocity(critic, clip[:, :, :num_clean], noisy, t_frames, labels, cond_noise,
                                          cond_eps, text)
        v_real = _guided(teacher, clip[:, :, :num_clean], noisy, t_frames, labels, cond_noise, cond_eps,
                         guidance_scale, null_label, text, null_text)
        to_x0 = t_frames[:, None, :, None, None].to(dtype)
        grad = dmd_gradient(clip, noisy - to_x0 * v_real, noisy - to_x0 * v_fake, chunks)
    return 0.5 * chunk_terms((x.float() - (clip - grad).float()).square(), chunks).mean()


def _guided(teacher: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor, t_frames: torch.Tensor,
            labels: torch.Tensor | None, cond_noise: float, cond_eps: torch.Tensor, scale: float,
            null_label: int | None, text: TextEmbeddings | None = None,
            null_text: TextEmbeddings | None = None) -> torch.Tensor:
    """The teacher's guided velocity; both branches in one batched pass (one branch without a condition to guide
    towards, or without guidance)."""
    two = lambda a: torch.cat([a, a])  # noqa: E731
    if text is not None and null_text is not None and scale != 1.0:
        v = teacher_forcing_velocity(teacher, two(clean), two(noisy), two(t_frames), None, cond_noise, two(cond_eps),
                                     TextEmbeddings.cat([text, null_text]))
        return guidance(*v.chunk(2), scale)
    if labels is None or null_label is None or scale == 1.0:
        return teacher_forcing_velocity(teacher, clean, noisy, t_frames, labels, cond_noise, cond_eps, text)
    both = torch.cat([labels, torch.full_like(labels, null_label)])
    v = teacher_forcing_velocity(teacher, two(clean), two(noisy), two(t_frames), both, cond_noise, two(cond_eps))
    return guidance(*v.chunk(2), scale)
