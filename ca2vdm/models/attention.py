"""Attention kernels, block-causal masks and the periodic temporal rotary embedding.

Layout everywhere in this module: ``(N, L, H, Dh)`` (batch-like, sequence, heads, head dim), which is the
layout flash-attn takes; the SDPA path transposes views. One function, :func:`attention`, hides the kernel.

Temporal positions (why the model never sees an untrained position)
------------------------------------------------------------------
Temporal attention uses rotary embeddings whose frequencies are integer multiples of ``2*pi / period``, so the
rotation of absolute frame index ``f`` depends only on ``f mod period`` and the score of a query at frame ``a``
against a key at frame ``b`` depends only on ``(a - b) mod period``. With ``period`` larger than every distance
that can occur inside the attention window (``window + chunk - 1``), scores depend exactly on the true relative
distance, which is bounded by the window length the model is trained with, however many chunks are generated.
Cached keys are rotated once, with their absolute index, when they are written; they never need re-rotating when
older frames are evicted. This plays the role of Ca2-VDM's cyclic position embedding (arXiv 2411.16375) but is
exactly shift-invariant, so no random training offsets are needed (``tests/test_model.py`` checks invariance).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from ca2vdm.config import BACKENDS, ChunkLayout
from ca2vdm.models import flex

try:  # optional dependency: pip install ca2vdm[flash]
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None



def resolve_backend(name: str, device: torch.device | str, training: bool = False) -> str:
    """Map a configured backend ('auto' | 'sdpa' | 'flash' | 'flex') to the kernel actually used on ``device``.

    'auto': FlexAttention block masks when training on CUDA (the masked passes); otherwise flash-attn when installed
    and on CUDA, else SDPA. Unmasked calls (spatial attention, every cached pass) never need a mask kernel: with
    'flex' they take SDPA. ``training``: gradients will flow (a training step, not a no-grad pass).
    """
    if name not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {name!r}")
    on_cuda = torch.device(device).type == "cuda"
    if name == "flash" and (flash_attn_func is None or not on_cuda):
        raise ValueError("attention_backend='flash' needs flash-attn installed (pip install ca2vdm[flash]) and a "
                         "CUDA device; use 'auto' to fall back to PyTorch SDPA")
    if name == "flex" and training and not on_cuda:
        raise ValueError("attention_backend='flex' trains on CUDA only (torch's FlexAttention has no backward pass "
                         "on CPU); use 'auto' or 'sdpa' to train on the CPU")
    if name == "auto":
        if on_cuda and training:
            return "flex"
        return "flash" if flash_attn_func is not None and on_cuda else "sdpa"
    return name


def kernel_mask(build: Callable[[torch.device | str], torch.Tensor], backend: str,
                device: torch.device | str, repeat: int = 1) -> torch.Tensor | flex.BlockMask:
    """The (Lq, Lk) bool mask ``build(device)`` makes, in the form ``backend``'s kernel takes: for 'flex' a cached
    FlexAttention block mask (built on the CPU, where its content is the cache key), else the tensor on ``device``.
    ``repeat`` = n: each entry covers n x n positions (a frame mask of joint attention over n tokens a frame)."""
    if backend == "flex":
        return flex.block_mask(build("cpu"), device, repeat)
    mask = build(device)
    return mask if repeat == 1 else mask.repeat_interleave(repeat, 0).repeat_interleave(repeat, 1)


# On CPU, SDPA's kernel pays a large fixed cost per sequence: for the temporal attention of a cached chunk (512
# sequences of 4 queries x 13 keys) it is 5x slower than two batched matmuls, which win up to ~40 keys
# (measured with torch 2.13 on 2 cores). Longer sequences keep SDPA.
CPU_MATMUL_MAX_KEYS = 32


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | flex.BlockMask | None = None,
              backend: str = "sdpa") -> torch.Tensor:
    """Softmax attention. q: (N, Lq, H, Dh); k, v: (N, Lk, H, Dh); mask: bool (Lq, Lk) or (N, 1, Lq | 1, Lk) (a
    mask per sequence: cross-attention's prompt padding), True = attend, or a FlexAttention block mask
    (:func:`kernel_mask`). Softmax statistics are float32 at every input precision.

    flash-attn takes no arbitrary mask and only half precision, so masked or fp32 calls use SDPA; short key
    sequences on CPU use :func:`matmul_attention`. Unmasked calls let SDPA pick its flash / cuDNN /
    memory-efficient kernels on CUDA.
    """
    if isinstance(mask, flex.BlockMask):
        return flex.attention(q, k, v, mask)
    if backend == "flash" and mask is None and q.dtype in (torch.float16, torch.bfloat16):
        return flash_attn_func(q, k, v)
    if q.device.type == "cpu" and k.shape[1] <= CPU_MATMUL_MAX_KEYS:
        return matmul_attention(q, k, v, mask)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)  # (N, Lq, H, Dh)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same attention as two batched matmuls with the heads folded into the batch (shapes as :func:`attention`).

    The softmax is written out: torch's softmax over a short last dimension is slower on CPU than its three ops.
    Scores, maximum and sum are float32 for half-precision inputs too (as in the fused kernels).
    """
    N, Lq, H, Dh = q.shape
    q, k, v = (rearrange(a, "n l h d -> (n h) l d") for a in (q, k, v))
    scores = torch.bmm(q.float(), k.float().transpose(1, 2)) * Dh ** -0.5  # (N*H, Lq, Lk) float32
    if mask is not None:  # (Lq, Lk) or (N, 1, Lq | 1, Lk) against the scores as (N, H, Lq, Lk)
        scores = rearrange(rearrange(scores, "(n h) q k -> n h q k", h=H).masked_fill(~mask, float("-inf")),
                           "n h q k -> (n h) q k")
    weights = (scores - scores.amax(-1, keepdim=True)).exp()
    out = torch.bmm((weights / weights.sum(-1, keepdim=True)).to(v.dtype), v)  # (N*H, Lq, Dh)
    return rearrange(out, "(n h) l d -> n l h d", h=H)


#################################################################################
#                               Chunk layout                                    #
#################################################################################

def block_causal_mask(layout: ChunkLayout, first_frame: int, num_frames: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, T) bool mask, True where frame i may attend to frame j: same chunk of ``layout`` or an earlier one
    (frames numbered from ``first_frame``). Chunks of one frame give frame-causal attention."""
    ids = layout.chunk_of(torch.arange(first_frame, first_frame + num_frames, device=device))
    return ids[None, :] <= ids[:, None]


def teacher_forcing_spans(layout: ChunkLayout, first_frame: int, num_clean: int,
                          total_frames: int) -> list[tuple[int, int]]:
    """(start, stop) of the noisy chunks of a teacher-forcing pass over ``total_frames`` frames, ``num_clean`` of them
    clean (local noisy frame numbers); ValueError unless the clean frames cover every noisy chunk but the last."""
    T = total_frames - num_clean
    spans = layout.spans(first_frame, T)
    if T < 1 or not spans[-1][0] <= num_clean <= T:
        raise ValueError(f"teacher forcing: {total_frames} frames split into num_cond_frames={num_clean} clean "
                         f"and {T} noisy frames; the clean frames must cover every noisy chunk but the last, "
                         f"i.e. from {spans[-1][0] if T >= 1 else 0} to {max(T, 0)} of them")
    return spans


def teacher_forcing_mask(layout: ChunkLayout, first_frame: int, num_clean: int, num_frames: int,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """(Tc + T, Tc + T) bool temporal mask of the teacher-forcing layout ``[clean frames 0..Tc-1 | noisy frames
    0..T-1]`` (both copies numbered from ``first_frame``), True = attend.

    Clean frames are block-causal among themselves (as conditioning is at inference) and never see noisy frames; a
    noisy frame sees the clean frames of strictly earlier chunks and the noisy frames of its own chunk.
    """
    clean = layout.chunk_of(torch.arange(first_frame, first_frame + num_clean, device=device))  # (Tc,)
    noisy = layout.chunk_of(torch.arange(first_frame, first_frame + num_frames, device=device))  # (T,)
    top = torch.cat([clean[None, :] <= clean[:, None], clean.new_zeros(num_clean, num_frames, dtype=torch.bool)], 1)
    bottom = torch.cat([clean[None, :] < noisy[:, None], noisy[None, :] == noisy[:, None]], dim=1)
    return torch.cat([top, bottom], dim=0)


#################################################################################
#                          Periodic rotary embedding                            #
#################################################################################

@lru_cache(maxsize=None)
def _rope_frequencies(head_dim: int, period: int) -> torch.Tensor:
    """Angular frequencies 2*pi*m/period, m cycling over 0..period//2 (m=0 leaves a channel pair unrotated)."""
    if head_dim % 2:
        raise ValueError(f"temporal RoPE needs an even head dimension, got {head_dim}")
    m = torch.arange(head_dim // 2) % (period // 2 + 1)
    return 2 * math.pi * m.double() / period


def rope_table(head_dim: int, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (period, head_dim // 2), computed in float64 then cast to float32."""
    angles = torch.arange(period).double()[:, None] * _rope_frequencies(head_dim, period)[None]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + Dh/2) of x: (..., T, Dh) by per-frame angles; cos, sin: (T, Dh/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)
