"""The transformer blocks of the causal ST-DiT and the block stack, with the hooks inference-time caches use.

Each block: spatial self-attention inside a frame (optionally also over the last k conditioning frames), block-causal
temporal attention along T for every spatial token, (a text model: cross-attention to the prompt,
:mod:`ca2vdm.models.cross_attention`), MLP; the three self-attention and MLP branches modulated by adaLN-Zero from the
per-frame condition. Tokens are (B, T, S, D); the per-frame condition ``c`` is (B, T, D).

Hooks (:mod:`ca2vdm.models.hooks`): the block stack routes every call through ``stack.hooks`` with one
:class:`StackCall`, the documented interface of what a step-caching policy may read; each attention module routes
its call through its own ``hooks`` with ``(x, ctx, layer)``. Without hooks both cost one call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange

from ca2vdm.config import ModelConfig
from ca2vdm.models.attention import apply_rope, attention
from ca2vdm.models.cross_attention import CrossAttention, TextKV
from ca2vdm.models.flex import BlockMask
from ca2vdm.models.hooks import HookRegistry
from ca2vdm.models.kv_cache import KVCache


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
    text: TextKV | None = None        # a text model: the prompt's cross-attention K/V of every block


#################################################################################
#                               Attention                                       #
#################################################################################

class SelfAttention(nn.Module):
    """Projections shared by spatial and temporal attention: fused qkv, per-head RMS norm of q and k, output; its
    call goes through ``hooks`` (``(x, ctx, layer)``) to :meth:`attend`."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.q_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(hidden_size // num_heads, eps=1e-6)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.hooks = HookRegistry()

    def forward(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        return self.hooks(self.attend, x, ctx, layer)

    def attend(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = rearrange(self.qkv(x), "b t s (three h d) -> three b t s h d", three=3, h=self.num_heads)
        return self.q_norm(q), self.k_norm(k), v  # each (B, T, S, H, Dh)


class SpatialAttention(SelfAttention):
    """Attention among the tokens of each frame; noisy frames may also see the last k conditioning frames."""

    def attend(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
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

    def attend(self, x: torch.Tensor, ctx: ForwardContext, layer: int) -> torch.Tensor:
        # one sequence per (video, token, head): a cached slice is then a view, with no gather of the heads
        q, k, v = (rearrange(a, "b t s h d -> (b s h) t d") for a in self.qkv_heads(x))
        q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            k, v = ctx.cache.update(layer, k, v, ctx.commit)  # (B*S*H, visible frames, Dh)
        out = attention(q[:, :, None], k[:, :, None], v[:, :, None], ctx.mask, backend=ctx.backend)
        return self.proj(rearrange(out, "(b s h) t 1 d -> b t s (h d)", b=x.shape[0], h=self.num_heads))


#################################################################################
#                                 Blocks                                        #
#################################################################################

class CausalSTBlock(nn.Module):
    """Spatial attention -> causal temporal attention -> (cross-attention to the prompt) -> MLP; the self-attention
    and MLP branches gated by adaLN-Zero."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        D = cfg.hidden_size
        self.layer = layer
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(D, elementwise_affine=False, eps=1e-6) for _ in range(3))
        self.spatial = SpatialAttention(D, cfg.num_heads)
        self.temporal = TemporalAttention(D, cfg.num_heads)
        self.cross = CrossAttention(D, cfg.num_heads) if cfg.text_encoder != "none" else None
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
        if self.cross is not None:
            x = x + self.cross(x, ctx.text, self.layer)
        return torch.addcmul(x, g_m, self.mlp(modulate(self.norm3(x), sh_m, sc_m)))  # (B, T, S, D)


@dataclass
class StackCall:
    """One call of the block stack, as its hooks see it (the DiT's :class:`~ca2vdm.models.base.StackCall`): what a
    step-caching policy may read, and how to run it.

    ``x`` (B, T, S, D) tokens in, ``c`` (B, T, D) per-frame condition, ``ctx`` the pass. A recompute pass (cache
    modes ``none`` and ``full``) leads with ``ctx.num_cond_frames`` conditioning frames; :meth:`noisy` cuts them off,
    so that a policy decides alike in every cache mode. A commit pass (``commit``) writes the KV cache and must run.
    """
    stack: BlockStack
    x: torch.Tensor
    c: torch.Tensor
    ctx: ForwardContext

    @property
    def commit(self) -> bool:
        return self.ctx.commit

    def noisy(self, tensor: torch.Tensor) -> torch.Tensor:
        """The frames being denoised of a (B, T, ...) tensor of this pass (the stack's input, output or residual)."""
        return tensor[:, self.ctx.num_cond_frames:]

    def modulated_input(self) -> torch.Tensor:
        """The first block's normalised, timestep-modulated input over the frames being denoised (TeaCache)."""
        return self.stack.blocks[0].modulated_input(self.noisy(self.x), self.noisy(self.c))

    def run(self) -> torch.Tensor:
        """The stack's output (B, T, S, D), every block computed."""
        x = self.x
        for block in self.stack.blocks:
            x = block(x, self.c, self.ctx)
        return x


class BlockStack(nn.Module):
    """The transformer blocks; every call goes through ``hooks`` (with a :class:`StackCall`), where step-caching
    policies skip or forecast it (:mod:`ca2vdm.sampling.step_cache`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(CausalSTBlock(cfg, i) for i in range(cfg.depth))
        self.hooks = HookRegistry()

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.hooks(StackCall.run, StackCall(self, x, c, ctx))


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
