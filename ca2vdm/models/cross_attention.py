"""Text conditioning: prompt tokens enter every block through cross-attention (PixArt-alpha, Open-Sora's STDiT, as
Ca2-VDM's model).

A prompt's token vectors (:class:`~ca2vdm.encoders.text.TextEmbeddings`, (B, L, text_dim)) are projected to the
model's width by :class:`TextEmbedder`, which puts a learned null token in front of every prompt (the empty prompt, the
unconditional branch of guidance, is that token alone, so attention always has a key). Each block's
:class:`CrossAttention` reads queries from the frames' tokens and keys/values from the prompt; its output is added
to the block's stream without a gate (as in PixArt), and its projection starts at zero, so a new model is the
unconditioned one.

The keys and values depend on the prompt only: :meth:`TextEmbedder.kv` computes them once per prompt for every block as
a :class:`TextKV` (the DiT's :class:`~ca2vdm.models.base.PromptKV`), which a generation keeps with its conditioning
(``ca2vdm.sampling.conditioning.Conditioning.text``) and passes to every denoising and commit pass. A training pass (raw
embeddings) computes them in the same function.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange

from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.models.attention import attention


@dataclass
class TextKV:
    """Every block's cross-attention keys and values of a batch of prompts: ``k``, ``v`` (depth, B, L + 1, H, Dh)
    (the null token first), ``mask`` (B, L + 1) bool, True = attend."""
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor

    def rows(self, count: int) -> TextKV:
        """The first ``count`` prompts (views)."""
        return TextKV(self.k[:, :count], self.v[:, :count], self.mask[:count])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.mask))


class CrossAttention(nn.Module):
    """Queries from the frames' tokens, keys and values from the prompt tokens; per-head RMS norm of q and k."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(hidden_size, hidden_size)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size)
        self.q_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def kv_heads(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) projected prompt tokens -> keys, values (B, L, H, Dh)."""
        k, v = rearrange(self.kv(text), "b l (two h d) -> two b l h d", two=2, h=self.num_heads)
        return self.k_norm(k), v

    def forward(self, x: torch.Tensor, text: TextKV, layer: int) -> torch.Tensor:
        """x: (B, T, S, D) -> (B, T, S, D); every token of every frame attends to its video's prompt."""
        B, T = x.shape[:2]
        q = self.q_norm(rearrange(self.q(x), "b t s (h d) -> b (t s) h d", h=self.num_heads))  # (B, T*S, H, Dh)
        out = attention(q, text.k[layer], text.v[layer], text.mask[:, None, None, :])  # key mask per video
        return self.proj(rearrange(out, "b (t s) h d -> b t s (h d)", t=T))


class TextEmbedder(nn.Module):
    """Prompt token vectors -> the model's width, behind a learned null token; and every block's K/V of them."""

    def __init__(self, text_dim: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"),
                                  nn.Linear(hidden_size, hidden_size))
        self.null = nn.Parameter(torch.zeros(1, 1, hidden_size))

    def forward(self, text: TextEmbeddings) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, L + 1, D) and mask (B, L + 1)."""
        weight = self.proj[0].weight
        tokens = self.proj(text.tokens.to(weight.device, weight.dtype))  # (B, L, D)
        tokens = torch.cat([self.null.expand(len(tokens), -1, -1), tokens], dim=1)
        mask = torch.cat([text.mask.new_ones(len(tokens), 1), text.mask], dim=1).to(weight.device)
        return tokens, mask

    def kv(self, text: TextEmbeddings, blocks: nn.ModuleList) -> TextKV:
        """Every block's cross-attention keys and values of ``text``: computed once per prompt."""
        tokens, mask = self(text)
        pairs = [block.cross.kv_heads(tokens) for block in blocks]  # depth x ((B, L + 1, H, Dh) x 2)
        return TextKV(torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs]), mask)
