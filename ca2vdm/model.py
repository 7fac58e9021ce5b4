"""Causal spatial-temporal diffusion transformer (Ca2-VDM, arXiv 2411.16375).

Tensor layout
-------------
video ``x``: (B, C, T, H, W); per-frame timesteps ``t``: (B, T) in [0, 1] (conditioning frames get 0);
tokens: (B, T, S, D) with S = (H / p) * (W / p); per-frame condition ``c``: (B, T, D).

Each block: spatial self-attention inside a frame (optionally also over the last k conditioning frames),
block-causal temporal attention along T for every spatial token, MLP; all three modulated by adaLN-Zero from the
per-frame condition. Temporal attention is causal across chunks, so a conditioning frame's keys and values never
depend on later frames and :class:`~ca2vdm.kv_cache.KVCache` can hold them for every later denoising step.

Three ways to run the same weights:
* full sequence (``cache=None``): the one-chunk training objective and the recompute baselines; the block-causal
  mask is applied;
* teacher forcing (``cache=None, teacher_forcing=True``): the all-chunk training objective. ``x`` is
  ``[clean frames 0..Tc-1 | noisy frames 0..T-1]``: both copies get the same temporal positions, noisy chunk j sees
  the clean chunks before j and itself (:func:`~ca2vdm.attention.teacher_forcing_mask`), and its prefix-enhanced
  spatial attention reads the last ``prefix_frames`` clean frames before chunk j. Each noisy chunk's output equals
  the full-sequence pass over ``[clean frames before j | noisy chunk j]`` (``tests/test_diffusion.py``);
* cached (``cache=KVCache``): ``x`` is one chunk; temporal attention reads the cached conditioning K/V.
  With ``commit=True`` the chunk is a finished conditioning chunk (t=0) whose K/V are appended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from .attention import (apply_rope, attention, block_causal_mask, chunk_spans, kernel_mask, resolve_backend,
                        rope_table, teacher_forcing_mask)
from .config import ModelConfig, validate_model
from .flex import BlockMask
from .kv_cache import KVCache


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one pass


@dataclass
class ForwardContext:
    """What every attention layer needs to know about the current forward pass."""
    cos: torch.Tensor                 # (T, Dh/2) rotary phase of each frame
    sin: torch.Tensor
    mask: torch.Tensor | BlockMask | None  # (T, T) temporal mask (block-causal or teacher forcing; a FlexAttention
    #                                        block mask with backend flex); None with a KV cache: no mask at all
    cache: KVCache | None
    commit: bool                      # cached pass over a finished conditioning chunk
    num_cond_frames: int              # full-sequence pass: leading frames that are conditioning (clean)
    prefix_frames: int                # prefix-enhanced spatial attention over this many conditioning frames
    backend: str
    # full-sequence pass, prefix-enhanced spatial attention: (query start, query stop, prefix start, prefix stop)
    # frame ranges, in order, tiling the sequence's tail; the query frames also attend to the prefix frames' tokens.
    # Frames before the first range attend only to themselves.
    spatial_prefix: tuple[tuple[int, int, int, int], ...] = ()


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
#                               Attention                                       #
#################################################################################

class SelfAttention(nn.Module):
    """Projections shared by spatial and temporal attention: fused qkv, per-head RMS norm of q and k, output."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = rearrange(self.qkv(x), "b t s (three h d) -> three b t s h d", three=3, h=self.num_heads)
        return self.q_norm(q), self.k_norm(k), v  # each (B, T, S, H, Dh)


class SpatialAttention(SelfAttention):
    """Attention among the tokens of each frame; noisy frames may also see the last k conditioning frames."""

    def forward(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)  # (B, T, S, H, Dh)
        num_plain, groups = self._prefix(k, v, ctx, layer)
        outs = []
        if num_plain:
            plain = attention(*(rearrange(a[:, :num_plain], "b t s h d -> (b t) s h d") for a in (q, k, v)),
                              backend=ctx.backend)
            outs.append(rearrange(plain, "(b t) s h d -> b t s (h d)", b=x.shape[0]))
        for start, stop, prefix in groups:
            kp, vp = (rearrange(a, "b n s h d -> b 1 (n s) h d") for a in prefix)  # (B, 1, n*S, H, Dh)
            qn, kn, vn = q[:, start:stop], k[:, start:stop], v[:, start:stop]
            kn = torch.cat([kp.expand(-1, qn.shape[1], -1, -1, -1), kn], dim=2)  # (B, Tn, (n+1)*S, H, Dh)
            vn = torch.cat([vp.expand(-1, qn.shape[1], -1, -1, -1), vn], dim=2)
            noisy = attention(*(rearrange(a, "b t s h d -> (b t) s h d") for a in (qn, kn, vn)), backend=ctx.backend)
            outs.append(rearrange(noisy, "(b t) s h d -> b t s (h d)", b=x.shape[0]))
        return self.proj(outs[0] if len(outs) == 1 else torch.cat(outs, dim=1))

    @staticmethod
    def _prefix(k, v, ctx: ForwardContext, layer: int):
        """How many leading frames attend only to themselves, and for the frames after them the groups
        (query start, query stop, prefix K/V (B, n, S, H, Dh)), in order, covering frames num_plain..T-1."""
        cache, T = ctx.cache, k.shape[1]
        if cache is None:
            groups = [(qs, qe, (k[:, ps:pe], v[:, ps:pe])) for qs, qe, ps, pe in ctx.spatial_prefix]
            return (groups[0][0] if groups else T), groups
        if ctx.commit:
            cache.store_prefix(layer, k, v)
            return T, []
        prefix = cache.prefix(layer)
        return (T, []) if prefix is None else (0, [(0, T, prefix)])


class TemporalAttention(SelfAttention):
    """Block-causal attention along time, one sequence per spatial token, with periodic rotary positions."""

    def forward(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        # one sequence per (video, token, head): a cached slice is then a view, with no gather of the heads
        q, k, v = (rearrange(a, "b t s h d -> (b s h) t d") for a in self.qkv_heads(x))
        q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            k, v = ctx.cache.update(layer, k, v)  # (B*S*H, visible frames, Dh)
        out = attention(q[:, :, None], k[:, :, None], v[:, :, None], ctx.mask, backend=ctx.backend)
        return self.proj(rearrange(out, "(b s h) t 1 d -> b t s (h d)", b=x.shape[0], h=self.num_heads))


#################################################################################
#                                 Core Model                                    #
#################################################################################

class CausalSTBlock(nn.Module):
    """Spatial attention -> causal temporal attention -> MLP, each gated by adaLN-Zero."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        D = cfg.hidden_size
        self.layer = layer
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(D, elementwise_affine=False, eps=1e-6) for _ in range(3))
        self.spatial = SpatialAttention(D, cfg.num_heads)
        self.temporal = TemporalAttention(D, cfg.num_heads)
        hidden = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 9 * D))

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Nine (B, T, 1, D) tensors: shift, scale, gate for spatial, temporal and MLP."""
        return self.adaLN_modulation(c)[:, :, None].chunk(9, dim=-1)

    def modulated_input(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The normalised, timestep-modulated input of the spatial attention (TeaCache's indicator)."""
        shift, scale = self.modulation(c)[:2]
        return modulate(self.norm1(x), shift, scale)

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        sh_s, sc_s, g_s, sh_t, sc_t, g_t, sh_m, sc_m, g_m = self.modulation(c)
        x = torch.addcmul(x, g_s, self.spatial(modulate(self.norm1(x), sh_s, sc_s), ctx, self.layer))
        x = torch.addcmul(x, g_t, self.temporal(modulate(self.norm2(x), sh_t, sc_t), ctx, self.layer))
        return torch.addcmul(x, g_m, self.mlp(modulate(self.norm3(x), sh_m, sc_m)))  # (B, T, S, D)


class BlockStack(nn.Module):
    """The transformer blocks: the unit that step-caching policies skip or approximate (see ca2vdm.step_cache)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(CausalSTBlock(cfg, i) for i in range(cfg.depth))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, c, ctx)
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated projection of tokens back to patches."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden_size
        self.norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(D, cfg.patch_size ** 2 * cfg.in_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, :, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, S, p*p*C)


class CausalVideoDiT(nn.Module):
    """Causal video DiT predicting the flow velocity of every frame."""

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
        self.stack = BlockStack(cfg)
        self.final_layer = FinalLayer(cfg)
        cos, sin = rope_table(self.head_dim, cfg.rope_period)
        self.register_buffer("rope_cos", cos, persistent=False)  # (period, Dh/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.step_cache = None  # an attached ca2vdm.step_cache policy
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
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def enable_cache(self, policy) -> None:
        """Attach a step-caching policy (see ca2vdm.step_cache); one at a time."""
        if self.step_cache is not None:
            raise ValueError("a step cache is already enabled; call disable_cache() first")
        policy.attach(self)
        self.step_cache = policy

    def disable_cache(self) -> None:
        """Detach the step-caching policy, if any."""
        if self.step_cache is not None:
            self.step_cache.detach()
            self.step_cache = None

    @property
    def null_label(self) -> int | None:
        return None if self.y_embedder is None else self.y_embedder.null_label

    def new_cache(self, batch: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache sized for this model and ``batch`` videos."""
        weight = self.x_embedder.weight
        return KVCache(self.cfg.depth, batch, self.grid ** 2, self.cfg.num_heads, self.head_dim,
                       self.cfg.max_context_frames, self.cfg.chunk_frames, self.cfg.prefix_frames,
                       device=device or weight.device, dtype=dtype or weight.dtype, sink_frames=self.cfg.sink_frames,
                       rope=(self.rope_cos, self.rope_sin))

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
            partial(block_causal_mask, frame_offset, num_frames, cfg.chunk_frames, cfg.first_frame_chunk), backend,
            device)
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
        spans = chunk_spans(frame_offset, T, cfg.chunk_frames, cfg.first_frame_chunk)  # noisy chunks, local frames
        if T < 1 or not spans[-1][0] <= num_clean <= T:
            raise ValueError(f"teacher forcing: {total_frames} frames split into num_cond_frames={num_clean} clean "
                             f"and {T} noisy frames; the clean frames must cover every noisy chunk but the last, "
                             f"i.e. from {spans[-1][0] if T >= 1 else 0} to {max(T, 0)} of them")
        local = torch.arange(frame_offset, frame_offset + T, device=device)
        pos = torch.cat([local[:num_clean], local]) % cfg.rope_period  # (Tc + T,): noisy i shares clean i's place
        backend = self._backend(device)
        mask = kernel_mask(partial(teacher_forcing_mask, frame_offset, num_clean, T, cfg.chunk_frames,
                                   cfg.first_frame_chunk), backend, device)
        P = cfg.prefix_frames
        spatial_prefix = tuple((num_clean + s, num_clean + e, max(0, s - P), s) for s, e in spans if P and s > 0)
        return ForwardContext(self.rope_cos[pos], self.rope_sin[pos], mask, None, False, num_clean, P, backend,
                              spatial_prefix)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                cache: KVCache | None = None, commit: bool = False, frame_offset: int = 0,
                num_cond_frames: int = 0, teacher_forcing: bool = False) -> torch.Tensor:
        """Velocity prediction (B, C, T, H, W).

        x: (B, C, T, H, W); t: (B, T). Full-sequence pass when ``cache`` is None (``frame_offset`` = absolute
        index of x's first frame, ``num_cond_frames`` = leading conditioning frames, used by prefix-enhanced
        spatial attention); otherwise x is one chunk placed after the cache's committed frames.
        ``teacher_forcing=True`` (no cache): x is ``num_cond_frames`` clean frames followed by the noisy copy of the
        clip they start, numbered from ``frame_offset`` again (see the module docstring).
        """
        B, C, T, H, W = x.shape
        if H != self.cfg.resolution or W != self.cfg.resolution or C != self.cfg.in_channels:
            raise ValueError(f"expected video (B, {self.cfg.in_channels}, T, {self.cfg.resolution}, "
                             f"{self.cfg.resolution}), got {tuple(x.shape)}")
        if teacher_forcing and cache is not None:
            raise ValueError("teacher_forcing is a full-sequence (training) layout; it takes no KV cache")
        tokens, c = self.embed(x, t, y)
        ctx = self.context(T, x.device, cache, commit, frame_offset, num_cond_frames, teacher_forcing)
        tokens = self.stack(tokens, c, ctx)  # (B, T, S, D)
        out = self.final_layer(tokens, c)
        p = self.cfg.patch_size
        return rearrange(out, "b t (h w) (p q c) -> b c t (h p) (w q)", h=self.grid, p=p, q=p)
