"""The causal Wan 2.1 transformer (``model.arch=wan``): diffusers' ``WanTransformer3DModel``, subclassed, with its
module tree and parameter names unchanged, so Wan, Self-Forcing, CausVid, Causal Forcing and LongLive weights load as
they are (:mod:`ca2vdm.models.wan.formats`).

Only ``forward`` is ours: the blocks run their own code as modules, and causality lives in the attention processors
(:mod:`ca2vdm.models.wan.processors`), which read the pass's settings from the blocks' own arguments.

Tensor layout
-------------
latents ``x``: (B, C, T, H, W); per-frame times ``t``: (B, T) in [0, 1] (Wan's timestep is 1000 t); tokens: (B, T*S,
D) frame-major (S = (H / p) * (W / p) patches of 1 x p x p), seen by step caches as (B, T, S, D); per-frame
modulation: (B, T, 6, D), repeated over a frame's tokens for the blocks; the prompt: (B, L, text_dim) token vectors
zero-padded to ``text_tokens`` rows (Wan pads to 512; the padded rows take part in cross-attention).

Three ways to run the same weights (:class:`~ca2vdm.models.base.CausalVideoModel`): a full pass under the
block-causal mask (training, recompute baselines), teacher forcing ``[clean | noisy]`` under its mask (training), and
cached passes over one chunk (sampling: :class:`~ca2vdm.models.wan.cache.WanCache`). With every frame at one time and
no cache, a pass over one chunk is diffusers' ``forward`` (tests/test_wan.py).
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from einops import rearrange
from torch import nn

from ca2vdm.config import ModelConfig, validate_model
from ca2vdm.encoders.text import TextEmbeddings, TextEncoder
from ca2vdm.models.attention import (
    block_causal_mask,
    kernel_mask,
    resolve_backend,
    teacher_forcing_mask,
    teacher_forcing_spans,
)
from ca2vdm.models.base import ModelBase
from ca2vdm.models.hooks import HookRegistry
from ca2vdm.models.wan.cache import WanCache
from ca2vdm.models.wan.processors import AttentionPass, CausalSelfAttention, PromptAttention, WanPromptKV
from ca2vdm.models.wan.rope import apply_rope, frame_rope, time_shift
from ca2vdm.models.wan.stack import WanStackCall

TIMESTEPS = 1000  # Wan's timestep of t = 1 (pure noise)


def diffusers_config(cfg: ModelConfig) -> dict:
    """``WanTransformer3DModel``'s arguments for a model config (text-to-video: no image embedder)."""
    return dict(patch_size=(1, cfg.patch_size, cfg.patch_size), num_attention_heads=cfg.num_heads,
                attention_head_dim=cfg.hidden_size // cfg.num_heads, in_channels=cfg.in_channels,
                out_channels=cfg.in_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
                num_layers=cfg.depth, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=cfg.eps,
                rope_max_seq_len=cfg.rope_max_seq_len)


def _shift_keys(rope: nn.Module, keys: torch.Tensor, frames: int) -> torch.Tensor:
    """Keys (N, n, H, Dh) moved by ``frames`` frames in time (the cache's ring sinks)."""
    return apply_rope(keys, *time_shift(rope, frames, keys.device))


class CausalWan(ModelBase, WanTransformer3DModel):
    """Wan 2.1's transformer, block-causal over chunks (a :class:`~ca2vdm.models.base.CausalVideoModel`)."""

    def __init__(self, cfg: ModelConfig):
        if validate_model(cfg).text_dim < 1:
            raise ValueError(f"model.text_encoder={cfg.text_encoder} needs model.text_dim, the width of its token "
                             "vectors (training sets it from the encoder)")
        super().__init__(**diffusers_config(cfg))
        self.cfg = cfg
        self.step_cache_hooks = HookRegistry()  # the block stack's, called with a WanStackCall
        for i, block in enumerate(self.blocks):
            block.attn1.set_processor(CausalSelfAttention(i))
            block.attn2.set_processor(PromptAttention(i))

    def _apply(self, fn, recurse: bool = True):
        """Casts (``model.to(torch.bfloat16)``) keep diffusers' ``_keep_in_fp32_modules`` (timestep embedder,
        modulation tables, norms) in float32, as ``from_pretrained(torch_dtype=...)`` does."""
        super()._apply(fn, recurse)
        for name, p in self.named_parameters():
            if p.is_floating_point() and p.dtype != torch.float32 and p.device.type != "meta" and any(
                    part in self._keep_in_fp32_modules for part in name.split(".")):
                p.data = p.data.float()
        return self

    def to(self, *args, **kwargs):
        """``nn.Module.to``: casts keep the float32 modules (:meth:`_apply`), so diffusers' warning about casting
        them does not apply."""
        return nn.Module.to(self, *args, **kwargs)

    # -- the model interface (ca2vdm.models.base.CausalVideoModel) ----------------------------------------------
    def repeated_blocks(self) -> nn.ModuleList:
        return self.blocks

    def attention_hooks(self) -> Iterator[tuple[tuple[int, str], HookRegistry]]:
        """Every block's self-attention hooks, keyed by (layer, "self"); their call is ``(attn, x, pass)``."""
        for i, block in enumerate(self.blocks):
            yield (i, "self"), block.attn1.processor.hooks

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.cfg.in_channels, self.cfg.resolution, self.cfg.frame_width

    @property
    def null_label(self) -> None:
        return None

    @property
    def text_conditional(self) -> bool:
        return True

    def text_kv(self, text: TextEmbeddings) -> WanPromptKV:
        """Every block's cross-attention K/V of a batch of prompts (once per prompt)."""
        return WanPromptKV.of(self._context(text), self.blocks)

    def empty_text(self, batch: int, encoder: TextEncoder | None = None) -> TextEmbeddings:
        """The encoded empty string (Wan's negative prompt by default; its UMT5 reads "" as the end token alone),
        zero-padded to ``text_tokens`` rows; without an encoder, no tokens: zeros."""
        cfg = self.cfg
        if encoder is None:
            return TextEmbeddings(torch.zeros(batch, cfg.text_tokens, cfg.text_dim),
                                  torch.zeros(batch, cfg.text_tokens, dtype=torch.bool))
        row = self._padded(encoder.encode([""]))
        return TextEmbeddings(row.tokens.expand(batch, -1, -1), row.mask.expand(batch, -1))

    def new_cache(self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                  sink_frames: int | None = None, sink_rope: str = "adjacent") -> WanCache:
        """An empty cache of frame slots for ``batch`` rows (default: the model's device and dtype); ``sink_frames``:
        the sampler's attention sinks (None: the model's), ``sink_rope``: ``original`` leaves ring sinks at their own
        indices."""
        cfg = self.cfg
        sinks = cfg.sink_frames if sink_frames is None else sink_frames
        return WanCache(cfg.depth, batch, self._tokens_per_frame, cfg.num_heads, cfg.hidden_size // cfg.num_heads,
                        cfg.max_context_frames, cfg.chunk_frames, sinks, cfg.positions, cfg.rope_max_seq_len,
                        partial(_shift_keys, self.rope), device=device or self.device, dtype=dtype or self.dtype,
                        realign_sinks=sink_rope == "adjacent")

    # -- the passes -------------------------------------------------------------------------------------------
    @property
    def _tokens_per_frame(self) -> int:
        return (self.cfg.resolution // self.cfg.patch_size) * (self.cfg.frame_width // self.cfg.patch_size)

    def _padded(self, text: TextEmbeddings) -> TextEmbeddings:
        """Prompt rows zero-padded to ``text_tokens`` (Wan's fixed context length)."""
        L, width = self.cfg.text_tokens, text.tokens.shape[1]
        if width > L or text.tokens.shape[2] != self.cfg.text_dim:
            raise ValueError(f"prompt vectors of {tuple(text.tokens.shape[1:])} do not fit this model: at most "
                             f"model.text_tokens={L} tokens of model.text_dim={self.cfg.text_dim}")
        pad = lambda a: torch.nn.functional.pad(a, (0, 0) * (a.ndim - 2) + (0, L - width))  # noqa: E731
        return TextEmbeddings(pad(text.tokens), pad(text.mask))

    def _context(self, text: TextEmbeddings) -> torch.Tensor:
        """Prompt token vectors projected to the model's width, (B, text_tokens, D)."""
        embedder = self.condition_embedder.text_embedder
        weight = embedder.linear_1.weight
        return embedder(self._padded(text).tokens.to(weight.device, weight.dtype))

    def _prompt(self, text: TextEmbeddings | WanPromptKV | None, batch: int) -> WanPromptKV | torch.Tensor:
        if text is None:
            raise ValueError("this model reads prompts: pass text (the empty prompt for none)")
        if len(text) != batch:
            raise ValueError(f"{len(text)} prompts for a batch of {batch} videos")
        return text if isinstance(text, WanPromptKV) else self._context(text)

    def _time(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame time embedding (B, T, D) and block modulation (B, T, 6, D) of times ``t`` (B, T) in [0, 1]."""
        embedder = self.condition_embedder
        features = embedder.timesteps_proj((t.float() * TIMESTEPS).flatten())  # (B*T, freq_dim)
        temb = embedder.time_embedder(features.to(embedder.time_embedder.linear_1.weight.dtype)).to(dtype)
        modulation = embedder.time_proj(embedder.act_fn(temb)).unflatten(-1, (6, -1))  # (B*T, 6, D)
        return temb.unflatten(0, t.shape), modulation.unflatten(0, t.shape)

    def _layout(self, T: int, device: torch.device, cache: WanCache | None, frame_offset: int, num_cond_frames: int,
                teacher_forcing: bool, backend: str) -> tuple[list[int], torch.Tensor | None]:
        """Each frame's rotary position and the pass's mask (None with a cache: it sees exactly its frames).

        Ring positions number the pass's frames from 0 (scores depend on distances only); absolute ones from
        ``frame_offset``, except that with sinks the first ``sink_frames`` frames of a window that left frames out
        (``frame_offset`` > 0: the sampler's ``[sinks | last frames | chunk]``) keep their own indices 0..k-1."""
        cfg = self.cfg
        if cache is not None:
            return cache.frame_positions(T), None
        if teacher_forcing:
            Tn = T - num_cond_frames
            teacher_forcing_spans(cfg.layout, frame_offset, num_cond_frames, T)
            build = partial(teacher_forcing_mask, cfg.layout, frame_offset, num_cond_frames, Tn)
            local = list(range(Tn))
            positions = local[:num_cond_frames] + local  # noisy frame i shares clean frame i's place
        else:
            build = partial(block_causal_mask, cfg.layout, frame_offset, T)
            positions = list(range(T))
        if cfg.positions == "absolute":
            sinks = cfg.sink_frames if frame_offset and not teacher_forcing else 0
            positions = [p if i < sinks else p + frame_offset for i, p in enumerate(positions)]
            if positions[-1] >= cfg.rope_max_seq_len:
                raise ValueError(f"frame {positions[-1]} is past Wan's RoPE table (model.rope_max_seq_len="
                                 f"{cfg.rope_max_seq_len}) in absolute positions; use model.positions=ring")
        return positions, kernel_mask(build, backend, device, repeat=self._tokens_per_frame)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                cache: WanCache | None = None, commit: bool = False, frame_offset: int = 0,
                num_cond_frames: int = 0, teacher_forcing: bool = False,
                text: TextEmbeddings | WanPromptKV | None = None) -> torch.Tensor:
        """Velocity (B, C, T, H, W) of latents ``x`` (B, C, T, H, W) at per-frame times ``t`` (B, T); see
        :meth:`ca2vdm.models.base.CausalVideoModel.__call__` (``y`` must be None: Wan reads prompts)."""
        B, C, T, H, W = x.shape
        if (C, H, W) != self.frame_shape:
            channels, height, width = self.frame_shape
            raise ValueError(f"expected latents (B, {channels}, T, {height}, {width}), got {tuple(x.shape)}")
        if y is not None:
            raise ValueError("this model reads prompts, not labels: pass text and no y")
        if teacher_forcing and cache is not None:
            raise ValueError("teacher_forcing is a full-sequence (training) layout; it takes no cache")
        p = self.cfg.patch_size
        h, w = H // p, W // p
        backend = resolve_backend(self.cfg.attention_backend, x.device,
                                  training=self.training and torch.is_grad_enabled())
        if cache is None and x.device.type == "cuda" and self.cfg.attention_backend == "auto":
            backend = "flex"  # a masked pass: a dense (T*S)^2 mask takes GiBs at Wan's sizes, a block mask per frame
            #                   does not
        positions, mask = self._layout(T, x.device, cache, frame_offset, num_cond_frames, teacher_forcing, backend)
        ctx = AttentionPass(*frame_rope(self.rope, positions, h, w, x.device), mask, cache, commit, backend)
        tokens = self.patch_embedding(x.to(self.dtype)).flatten(2).transpose(1, 2).contiguous()  # (B, T*S, D)
        temb, modulation = self._time(t, tokens.dtype)  # (B, T, D), (B, T, 6, D)
        call = WanStackCall(self.blocks, tokens.unflatten(1, (T, h * w)), modulation, self._prompt(text, B), ctx,
                            0 if cache is not None else num_cond_frames)
        tokens = self.step_cache_hooks(WanStackCall.run, call)  # (B, T, S, D)
        shift, scale = (self.scale_shift_table[None] + temb[:, :, None]).unbind(2)  # (B, T, D) each
        out = (self.norm_out(tokens.float()) * (1 + scale[:, :, None]) + shift[:, :, None]).type_as(tokens)
        out = self.proj_out(out)  # (B, T, S, p*p*C)
        return rearrange(out, "b t (h w) (ph pw c) -> b c t (h ph) (w pw)", h=h, ph=p, pw=p)
