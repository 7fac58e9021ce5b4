"""The training losses of rectified flow (convention in :mod:`ca2vdm.sampling.flow`).

Two training objectives (``diffusion.objective``):
* ``chunk`` (:func:`causal_flow_loss`, the default): one chunk of the clip is noisy, the frames before it condition
  it; only that chunk carries loss;
* ``all`` (:func:`teacher_forcing_flow_loss`): teacher forcing as in CausVid / Self-Forcing. One sequence holds the
  perturbed clean clip and its noisy copy; every noisy chunk sees exactly what it would see as the noisy chunk of
  ``chunk`` (the clean chunks before it), so each chunk's loss term equals that objective's for the same noise and
  time, and every chunk carries loss in every step.

Both take an optional ``context``: conditioning frames that replace the clip's own while the targets stay the
clip's (self-rollout, :mod:`ca2vdm.training.rollout`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.sampling.flow import perturb


def logit_normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Noise times ``sigmoid(N(0, 1))`` (SD3's logit-normal), float32."""
    return torch.sigmoid(torch.randn(shape, generator=generator, device=device))


def causal_flow_loss(model: torch.nn.Module, video: torch.Tensor, labels: torch.Tensor | None, num_cond: int,
                     num_noisy: int, cond_noise: float, generator: torch.Generator | None = None, *,
                     noise: torch.Tensor | None = None, t: torch.Tensor | None = None,
                     context: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                     text: TextEmbeddings | None = None) -> torch.Tensor:
    """Flow-matching loss on the noisy chunk that follows ``num_cond`` clean conditioning frames.

    video: (B, C, T, H, W) with T >= num_cond + num_noisy; frames after the noisy chunk are dropped.
    Noise times are logit-normal (SD3), one per sample; the loss is masked to the noisy frames.
    noise: (B, C, num_cond + num_noisy, H, W) and t: (B,) replace the random draws (the conditioning frames are
    perturbed with noise[:, :, :num_cond]). context: (B, C, >= num_cond, H, W) conditioning frames to use instead of
    the video's (self-rollout: the model's own samples); the target stays the video's chunk. weight: (B,) 0/1, the
    samples that carry loss (``training.chunk_weights``); the loss is their mean (0 if there are none). text: a text
    model's prompts (:class:`~ca2vdm.encoders.text.TextEmbeddings`, one per video).
    """
    x0 = video[:, :, :num_cond + num_noisy]
    B, T = x0.shape[0], x0.shape[2]
    device = x0.device
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    if t is None:
        t = logit_normal((B,), generator, device)  # (B,)
    t_frames = torch.zeros(B, T, device=device)
    t_frames[:, num_cond:] = t[:, None]
    noise_level = torch.full((B, T), cond_noise, device=device)  # conditioning: perturbed, told t=0
    noise_level[:, num_cond:] = t[:, None]
    inputs = x0 if context is None else torch.cat([context[:, :, :num_cond], x0[:, :, num_cond:]], dim=2)
    x_t = perturb(inputs, noise, noise_level[:, None, :, None, None].to(x0.dtype))
    pred = model(x_t, t_frames, labels, num_cond_frames=num_cond, text=text)
    target = noise - x0
    if weight is None:
        return F.mse_loss(pred[:, :, num_cond:].float(), target[:, :, num_cond:].float())
    err = (pred[:, :, num_cond:].float() - target[:, :, num_cond:].float()).square().mean(dim=(1, 2, 3, 4))  # (B,)
    return (err * weight).sum() / weight.sum().clamp(min=1)


def teacher_forcing_flow_loss(model: torch.nn.Module, video: torch.Tensor, labels: torch.Tensor | None,
                              chunks: list[tuple[int, int]], cond_noise: float,
                              generator: torch.Generator | None = None, *, noise: torch.Tensor | None = None,
                              cond_eps: torch.Tensor | None = None, t: torch.Tensor | None = None,
                              context: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                              per_chunk: bool = False, text: TextEmbeddings | None = None) -> torch.Tensor:
    """Flow-matching loss on every chunk of a clip at once (teacher forcing; ``diffusion.objective=all``).

    video: (B, C, T, H, W), its first frame at a chunk boundary of the model's layout; chunks: (start, length) of
    the clip's chunks in that layout (``training.chunk_layout``), ending at T. The model sees
    ``[clean frames 0..Tc-1 | noisy frames 0..T-1]``, Tc = the last chunk's start (the last clean chunk conditions
    nothing): clean frames perturbed with ``cond_eps`` to ``cond_noise`` and told t=0, as conditioning frames are
    everywhere; noisy chunk k at its own logit-normal time ``t[:, k]`` (one per sample and chunk: more varied signal
    per step than one per sample).

    noise (B, C, T, H, W), cond_eps (B, C, Tc, H, W) and t (B, K) replace the random draws (drawn in that order).
    context: (B, C, >= Tc, H, W) clean frames to use instead of the video's (self-rollout); targets stay the video's.
    weight: (B, K) 0/1, the samples whose chunk k carries loss (``training.chunk_weights``). text: as
    :func:`causal_flow_loss`.
    Returns the mean over chunks of each chunk's mean squared error, or with ``per_chunk`` those K terms: term k
    equals :func:`causal_flow_loss` for chunk k with noise ``cat(cond_eps[:, :, :start_k], noise[:, :, chunk k])``,
    time ``t[:, k]`` and weight ``weight[:, k]``.
    """
    num_clean, T = chunks[-1][0], chunks[-1][0] + chunks[-1][1]
    x0 = video[:, :, :T]
    if x0.shape[2] != T:
        raise ValueError(f"the chunks cover {T} frames but the video has only {x0.shape[2]}")
    B, device, dtype = x0.shape[0], x0.device, x0.dtype
    chunk_index = frame_chunks(chunks, device)  # (T,)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
    if cond_eps is None:
        cond_eps = torch.randn((B, x0.shape[1], num_clean, *x0.shape[3:]), generator=generator, device=device,
                               dtype=dtype)
    if t is None:
        t = logit_normal((B, len(chunks)), generator, device)  # (B, K)
    t_frames = t[:, chunk_index]  # (B, T): each frame its chunk's time
    noisy = perturb(x0, noise, t_frames[:, None, :, None, None].to(dtype))  # (B, C, T, H, W)
    clean = (x0 if context is None else context)[:, :, :num_clean]
    pred = teacher_forcing_velocity(model, clean, noisy, t_frames, labels, cond_noise, cond_eps, text)
    terms = chunk_terms((pred.float() - (noise - x0).float()).square(), chunks, weight)
    return terms if per_chunk else terms.mean()


def frame_chunks(chunks: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """(T,) the index of each frame's chunk."""
    return torch.tensor([k for k, (_, n) in enumerate(chunks) for _ in range(n)], device=device)


def teacher_forcing_velocity(model: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor,
                             t_frames: torch.Tensor, labels: torch.Tensor | None, cond_noise: float,
                             cond_eps: torch.Tensor, text: TextEmbeddings | None = None) -> torch.Tensor:
    """The model's velocity (B, C, T, H, W) for every noisy frame of a clip in one teacher-forcing pass: noisy chunk
    k at its times ``t_frames`` (B, T) sees the clean frames (B, C, Tc, H, W) of the chunks before it, perturbed with
    ``cond_eps`` to ``cond_noise`` and told t=0, as conditioning frames are everywhere; ``text``: a text model's
    prompts."""
    B, num_clean = noisy.shape[0], clean.shape[2]
    clean = perturb(clean, cond_eps, cond_noise)  # (B, C, Tc, H, W)
    times = torch.cat([torch.zeros(B, num_clean, device=noisy.device), t_frames], dim=1)  # (B, Tc + T)
    pred = model(torch.cat([clean, noisy], dim=2), times, labels, num_cond_frames=num_clean, teacher_forcing=True,
                 text=text)
    return pred[:, :, num_clean:]


def chunk_means(err: torch.Tensor, chunks: list[tuple[int, int]]) -> torch.Tensor:
    """(B, K) each sample's mean of ``err`` (B, C, T, H, W) over each chunk's frames."""
    B, device = err.shape[0], err.device
    lengths = torch.tensor([n for _, n in chunks], device=device, dtype=err.dtype)  # (K,)
    per_frame = err.mean(dim=(1, 3, 4))  # (B, T)
    sums = torch.zeros(B, len(chunks), device=device, dtype=err.dtype)
    return sums.index_add_(1, frame_chunks(chunks, device), per_frame) / lengths  # (B, K)


def chunk_terms(err: torch.Tensor, chunks: list[tuple[int, int]], weight: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) each chunk's mean of ``err`` (B, C, T, H, W) over its frames and samples (with ``weight`` (B, K) 0/1:
    over the samples whose chunk k carries loss)."""
    terms = chunk_means(err, chunks)  # (B, K)
    if weight is None:
        return terms.mean(dim=0)  # (K,)
    return (terms * weight).sum(dim=0) / weight.sum(dim=0).clamp(min=1)  # (K,)
