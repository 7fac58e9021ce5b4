"""Causal spatial-temporal diffusion transformer (Ca2-VDM, arXiv 2411.16375).

Tensor layout
-------------
video ``x``: (B, C, T, H, W); per-frame timesteps ``t``: (B, T) in [0, 1] (conditioning frames get 0);
tokens: (B, T, S, D) with S = (H / p) * (W / p); per-frame condition ``c``: (B, T, D).

The blocks (:mod:`ca2vdm.models.blocks`): spatial self-attention inside a frame (optionally also over the last k
conditioning frames), block-causal temporal attention along T for every spatial token, MLP; all three modulated by
adaLN-Zero from the per-frame condition. A text model (``model.text_encoder``) cross-attends to its prompt in every
block (:mod:`ca2vdm.models.cross_attention`); the prompt's K/V are computed once per prompt (:meth:`text_kv`).
Temporal attention is causal across chunks (the model's :class:`~ca2vdm.config.ChunkLayout`), so a conditioning
frame's keys and values never depend on later frames and :class:`~ca2vdm.models.kv_cache.KVCache` can hold them for
every later denoising step.

Three ways to run the same weights:
* full sequence (``cache=None``): the one-chunk training objective and the recompute baselines; the block-causal
  mask is applied;
* teacher forcing (``cache=None, teacher_forcing=True``): the all-chunk training objective. ``x`` is
  ``[clean frames 0..Tc-1 | noisy frames 0..T-1]``: both copies get the same temporal positions, noisy chunk j sees
  the clean chunks before j and itself (:func:`~ca2vdm.models.attention.teacher_forcing_mask`), and its prefix-enhanced
  spatial attention reads the last ``prefix_frames`` clean frames before chunk j. Each noisy chunk's output equals
  the full-sequence pass over ``[clean frames before j | noisy chunk j]`` (``tests/test_diffusion.py``);
* cached (``cache=KVCache``): ``x`` is one chunk; temporal attention reads the cached conditioning K/V.
  With ``commit=True`` the chunk is a finished conditioning chunk (t=0) whose K/V are appended.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from ca2vdm.config import ModelConfig, validate_model
from ca2vdm.encoders.text import TextEmbeddings, TextEncoder
from ca2vdm.models.attention import (
    block_causal_mask,
    kernel_mask,
    resolve_backend,
    rope_table,
    teacher_forcing_mask,
    teacher_forcing_spans,
)
from ca2vdm.models.base import ModelBase
from ca2vdm.models.blocks import BlockStack, FinalLayer, ForwardContext
from ca2vdm.models.cross_attention import TextEmbedder, TextKV
from ca2vdm.models.hooks import HookRegistry
from ca2vdm.models.kv_cache import KVCache

#################################################################################
#                           Embedding Layers                                    #
#################################################################################

class TimestepEmbedder(nn.Module):
    """Embeds per-frame diffusion times t in [0, 1] into vectors."""

    def __init__(self, hidden_size: int, freq_size: int = 256):
        super().__init__()
        self.freq_size = freq_size
        self.mlp = nn.Sequential(nn.Linear(freq_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000 * t.float()[..., None] * freqs
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (..., D)


class LabelEmbedder(nn.Module):
    """Class labels to vectors; index ``num_classes`` is the learned null label used for guidance."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.null_label = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid*grid, dim)."""
    coords = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), 0).reshape(2, -1)
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
    parts = [f(c[:, None] * omega[None]) for c in coords for f in (np.sin, np.cos)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


#################################################################################
#                                 Core Model                                    #
#################################################################################

class CausalVideoDiT(ModelBase):
    """Causal video DiT predicting the flow velocity of every frame (a :class:`~ca2vdm.models.base.CausalVideoModel`,
    ``model.arch=dit``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = validate_model(cfg)
        D, p = cfg.hidden_size, cfg.patch_size
        self.grid = cfg.resolution // p
        self.head_dim = D // cfg.num_heads
        self.x_embedder = nn.Linear(p * p * cfg.in_channels, D)
        self.register_buffer("pos_embed", sincos_2d(D, self.grid), persistent=False)  # (S, D)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(cfg.num_classes, D) if cfg.num_classes else None
        if cfg.text_encoder != "none" and cfg.text_dim < 1:
            raise ValueError(f"model.text_encoder={cfg.text_encoder} needs model.text_dim, the width of its token "
                             "vectors (training sets it from the encoder)")
        self.text_embedder = TextEmbedder(cfg.text_dim, D) if cfg.text_encoder != "none" else None
        self.stack = BlockStack(cfg)
        self.final_layer = FinalLayer(cfg)
        cos, sin = rope_table(self.head_dim, cfg.rope_period)
        self.register_buffer("rope_cos", cos, persistent=False)  # (period, Dh/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.initialize_weights()

    def _apply(self, fn, recurse: bool = True):
        """Casts (``model.to(torch.bfloat16)``, ``.half()``) change weights and buffers, but the rotary tables are
        rebuilt in float32 on the new device: temporal phases stay float32 at every precision."""
        super()._apply(fn, recurse)
        if self.rope_cos.device.type != "meta":
            tables = rope_table(self.head_dim, self.cfg.rope_period)
            self.rope_cos, self.rope_sin = (table.to(self.rope_cos.device) for table in tables)
        return self

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for mlp in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(mlp.weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        for block in self.stack.blocks:  # adaLN-Zero: every residual branch starts closed
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        if self.text_embedder is not None:  # cross-attention starts closed: a new text model is the unprompted one
            nn.init.normal_(self.text_embedder.null, std=0.02)
            for block in self.stack.blocks:
                nn.init.zeros_(block.cross.proj.weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # -- the model interface (ca2vdm.models.base.CausalVideoModel) ----------------------------------------------
    @property
    def step_cache_hooks(self) -> HookRegistry:
        """The block stack's hooks, called with a :class:`~ca2vdm.models.blocks.StackCall`."""
        return self.stack.hooks

    def repeated_blocks(self) -> nn.ModuleList:
        return self.stack.blocks

    def attention_hooks(self) -> Iterator[tuple[tuple[int, str], HookRegistry]]:
        """The hooks of every attention module, keyed by (layer, "spatial" | "temporal"); their call is
        ``(x, ctx, layer)``."""
        for block in self.stack.blocks:
            yield (block.layer, "spatial"), block.spatial.hooks
            yield (block.layer, "temporal"), block.temporal.hooks

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.cfg.in_channels, self.cfg.resolution, self.cfg.resolution

    @property
    def null_label(self) -> int | None:
        return None if self.y_embedder is None else self.y_embedder.null_label

    @property
    def text_conditional(self) -> bool:
        return self.text_embedder is not None

    def text_kv(self, text: TextEmbeddings) -> TextKV:
        """Every block's cross-attention K/V of a batch of prompts: computed once per prompt, then read by every
        pass of a generation."""
        if self.text_embedder is None:
            raise ValueError("this model is not text-conditional (model.text_encoder=none); give no prompt")
        return self.text_embedder.kv(text, self.stack.blocks)

    def empty_text(self, batch: int, encoder: TextEncoder | None = None) -> TextEmbeddings:
        """No tokens: cross-attention then reads only the learned null token."""
        cfg = self.cfg
        return TextEmbeddings(torch.zeros(batch, cfg.text_tokens, cfg.text_dim),
                              torch.zeros(batch, cfg.text_tokens, dtype=torch.bool))

    def _prompt(self, text: TextEmbeddings | TextKV | None, batch: int) -> TextKV | None:
        """The prompt K/V of a pass (raw embeddings are projected now)."""
        if self.text_embedder is None:
            if text is not None:
                raise ValueError("this model is not text-conditional (model.text_encoder=none); give no prompt")
            return None
        if text is None:
            raise ValueError("this model is text-conditional: pass text (the empty prompt for none)")
        text = self.text_kv(text) if isinstance(text, TextEmbeddings) else text
        if text.mask.shape[0] != batch:
            raise ValueError(f"{text.mask.shape[0]} prompts for a batch of {batch} videos")
        return text

    def new_cache(self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                  sink_frames: int | None = None, sink_rope: str = "adjacent") -> KVCache:
        """An empty KV cache sized for this model and ``batch`` videos (``sink_frames``: the sampler's attention sinks,
        default the model's)."""
        sinks = self.cfg.sink_frames if sink_frames is None else sink_frames
        return KVCache(self.cfg.depth, batch, self.grid ** 2, self.cfg.num_heads, self.head_dim,
                       self.cfg.max_context_frames, self.cfg.chunk_frames, self.cfg.prefix_frames,
                       device=device or self.device, dtype=dtype or self.dtype, sink_frames=sinks,
                       rope=(self.rope_cos, self.rope_sin), realign_sinks=sink_rope == "adjacent")

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens (B, T, S, D) and per-frame condition (B, T, D)."""
        p = self.cfg.patch_size
        patches = rearrange(x, "b c t (h p) (w q) -> b t (h w) (p q c)", p=p, q=p).to(self.x_embedder.weight.dtype)
        tokens = self.x_embedder(patches) + self.pos_embed
        c = self.t_embedder(t)  # (B, T, D)
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass labels y (use model.null_label for none)")
            c = c + self.y_embedder(y)[:, None]
        return tokens, c

    def context(self, num_frames: int, device: torch.device, cache: KVCache | None = None, commit: bool = False,
                frame_offset: int = 0, num_cond_frames: int = 0, teacher_forcing: bool = False) -> ForwardContext:
        """Positions, mask and cache handles for a forward pass over ``num_frames`` frames (with
        ``teacher_forcing``: ``num_cond_frames`` clean frames followed by the noisy copy of the clip)."""
        if teacher_forcing:
            return self._teacher_forcing_context(num_frames, device, frame_offset, num_cond_frames)
        cfg = self.cfg
        if cache is not None:
            frame_offset = cache.frames_committed
        pos = torch.arange(frame_offset, frame_offset + num_frames, device=device) % cfg.rope_period
        backend = self._backend(device)
        mask = None if cache is not None else kernel_mask(
            partial(block_causal_mask, cfg.layout, frame_offset, num_frames), backend, device)
        n_cond, n_prefix = num_cond_frames, cfg.prefix_frames
        spatial_prefix = ((n_cond, num_frames, max(0, n_cond - n_prefix), n_cond),) \
            if cache is None and n_prefix and 0 < n_cond < num_frames else ()
        return ForwardContext(self.rope_cos[pos], self.rope_sin[pos], mask, cache, commit, num_cond_frames,
                              cfg.prefix_frames, backend, spatial_prefix)

    def _backend(self, device: torch.device) -> str:
        """The attention kernel of this pass (FlexAttention block masks by default when training on CUDA)."""
        return resolve_backend(self.cfg.attention_backend, device, training=self.training and torch.is_grad_enabled())

    def _teacher_forcing_context(self, total_frames: int, device: torch.device, frame_offset: int,
                                 num_clean: int) -> ForwardContext:
        """The layout ``[clean frames 0..Tc-1 | noisy frames 0..T-1]`` with Tc = ``num_clean``, T = total - Tc.

        Both copies take positions ``frame_offset + i``; noisy chunk j sees clean chunks < j and itself; its spatial
        prefix is the last ``prefix_frames`` clean frames before it, as in a cached or ``num_cond_frames`` pass.
        """
        cfg, T = self.cfg, total_frames - num_clean
        spans = teacher_forcing_spans(cfg.layout, frame_offset, num_clean, total_frames)  # noisy chunks, local frames
        local = torch.arange(frame_offset, frame_offset + T, device=device)
        pos = torch.cat([local[:num_clean], local]) % cfg.rope_period  # (Tc + T,): noisy i shares clean i's place
        backend = self._backend(device)
        mask = kernel_mask(partial(teacher_forcing_mask, cfg.layout, frame_offset, num_clean, T), backend, device)
        P = cfg.prefix_frames
        spatial_prefix = tuple((num_clean + s, num_clean + e, max(0, s - P), s) for s, e in spans if P and s > 0)
        return ForwardContext(self.rope_cos[pos], self.rope_sin[pos], mask, None, False, num_clean, P, backend,
                              spatial_prefix)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                cache: KVCache | None = None, commit: bool = False, frame_offset: int = 0,
                num_cond_frames: int = 0, teacher_forcing: bool = False,
                text: TextEmbeddings | TextKV | None = None) -> torch.Tensor:
        """Velocity prediction (B, C, T, H, W).

        x: (B, C, T, H, W); t: (B, T). Full-sequence pass when ``cache`` is None (``frame_offset`` = absolute
        index of x's first frame, ``num_cond_frames`` = leading conditioning frames, used by prefix-enhanced
        spatial attention); otherwise x is one chunk placed after the cache's committed frames.
        ``teacher_forcing=True`` (no cache): x is ``num_cond_frames`` clean frames followed by the noisy copy of the
        clip they start, numbered from ``frame_offset`` again (see the module docstring).
        ``text`` (a text model): the prompts, one per video, as token vectors or their K/V (:meth:`text_kv`).
        """
        B, C, T, H, W = x.shape
        if H != self.cfg.resolution or W != self.cfg.resolution or C != self.cfg.in_channels:
            raise ValueError(f"expected video (B, {self.cfg.in_channels}, T, {self.cfg.resolution}, "
                             f"{self.cfg.resolution}), got {tuple(x.shape)}")
        if teacher_forcing and cache is not None:
            raise ValueError("teacher_forcing is a full-sequence (training) layout; it takes no KV cache")
        tokens, c = self.embed(x, t, y)
        ctx = self.context(T, x.device, cache, commit, frame_offset, num_cond_frames, teacher_forcing)
        ctx.text = self._prompt(text, B)
        tokens = self.stack(tokens, c, ctx)  # (B, T, S, D)
        out = self.final_layer(tokens, c)
        p = self.cfg.patch_size
        return rearrange(out, "b t (h w) (p q c) -> b c t (h p) (w q)", h=self.grid, p=p, q=p)
