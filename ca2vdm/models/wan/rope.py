"""Wan's 3-D rotary positions at any frame position: the time, height and width parts of the head dimension rotated
by a token's frame position, row and column, exactly as diffusers' ``WanRotaryPosEmbed`` table rows (the same
function, ``get_1d_rotary_pos_embed`` in float64), but for positions given per frame rather than rows 0..T-1 of a
table of ``rope_max_seq_len``: a chunk at frame offset f takes rows f..f+T-1, and positions past the table (ring
positions of a long video) are computed the same way.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from einops import repeat

THETA = 10000.0  # WanRotaryPosEmbed's base (diffusers builds every Wan 2.1 model with its default)


def _rows(dim: int, positions: tuple[float, ...], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, dim) float32 of ``positions``, computed in float64 as WanRotaryPosEmbed's table is."""
    pos = torch.tensor(positions, dtype=torch.float64, device=device)
    return get_1d_rotary_pos_embed(dim, pos, THETA, use_real=True, repeat_interleave_real=True,
                                   freqs_dtype=torch.float64)


@lru_cache(maxsize=32)
def _frame_rope(dims: tuple[int, int, int], positions: tuple[int, ...], height: int, width: int,
                device: str) -> tuple[torch.Tensor, torch.Tensor]:
    t_dim, h_dim, w_dim = dims
    T = len(positions)
    parts = [(_rows(t_dim, positions, device), "f d -> f h w d"),
             (_rows(h_dim, tuple(range(height)), device), "h d -> f h w d"),
             (_rows(w_dim, tuple(range(width)), device), "w d -> f h w d")]
    cos, sin = (torch.cat([repeat(rows[i], pattern, f=T, h=height, w=width) for rows, pattern in parts], dim=-1)
                for i in (0, 1))
    return cos.flatten(0, 2), sin.flatten(0, 2)  # (T*h*w, Dh), frame-major like the patches


def frame_rope(rope: WanRotaryPosEmbed, positions: list[int], height: int, width: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T*h*w, head_dim) float32 for T frames at ``positions`` of h x w patches each (kept for reuse: the
    denoising steps of a chunk share them)."""
    return _frame_rope((rope.t_dim, rope.h_dim, rope.w_dim), tuple(positions), height, width, str(device))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, N, heads, head_dim) rotated by (N, head_dim) tables (diffusers' interleaved real rotation)."""
    return apply_rotary_emb(x, (cos, sin), use_real=True, use_real_unbind_dim=-1, sequence_dim=1)


def time_shift(rope: WanRotaryPosEmbed, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (1, head_dim) of a move by ``frames`` frames in time (the height and width parts unrotated): keys
    written at position p then sit at p + frames (rotations add)."""
    cos, sin = _rows(rope.t_dim, (frames,), str(device))
    rest = rope.h_dim + rope.w_dim
    return torch.cat([cos, cos.new_ones(1, rest)], 1), torch.cat([sin, sin.new_zeros(1, rest)], 1)
