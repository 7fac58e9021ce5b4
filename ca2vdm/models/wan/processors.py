"""The causal Wan's attention processors: what runs inside diffusers' ``WanAttention`` modules (``blocks.N.attn1`` and
``blocks.N.attn2``), which keep their projections, norms and parameter names.

A pass's attention settings travel through the block's own arguments, so no state lives on the model between calls:
the block hands its ``rotary_emb`` argument to self-attention and its ``encoder_hidden_states`` to cross-attention, and
the causal model passes an :class:`AttentionPass` as the first and the prompt (projected tokens, or every block's K/V
as :class:`WanPromptKV`) as the second.

* :class:`CausalSelfAttention` (``attn1``): q and k RMS-normed across heads, rotated by Wan's 3-D RoPE at the frames'
  positions, then joint attention over every token: under the block-causal (or teacher-forcing) mask in a full pass,
  or over the cached frames' keys and values and the chunk's own in a cached pass (:class:`~ca2vdm.models.wan.cache
  .WanCache`). Its call goes through ``hooks`` (FasterCache's attention reuse).
* :class:`PromptAttention` (``attn2``): every token to the prompt's keys and values, made once per prompt
  (:meth:`WanPromptKV.of`) and read by every pass; zero-padded prompt rows take part, as in Wan.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.transformers.transformer_wan import WanAttention

from ca2vdm.models.attention import attention
from ca2vdm.models.flex import BlockMask
from ca2vdm.models.hooks import HookRegistry
from ca2vdm.models.wan.cache import WanCache
from ca2vdm.models.wan.rope import apply_rope


@dataclass
class AttentionPass:
    """What every self-attention of one forward pass needs (given to each block as its ``rotary_emb``)."""
    cos: torch.Tensor                      # (T*S, head_dim) rotary tables of the pass's tokens
    sin: torch.Tensor
    mask: torch.Tensor | BlockMask | None  # (T*S, T*S) bool, or a FlexAttention block mask; None with a cache
    cache: WanCache | None
    commit: bool                           # a cached pass over a finished chunk: its K/V stay
    backend: str                           # the attention kernel (ca2vdm.models.attention.resolve_backend)


@dataclass
class WanPromptKV:
    """Every block's cross-attention keys and values of a batch of prompts, ``k``, ``v`` (depth, B, L, H, Dh): the
    causal Wan's :class:`~ca2vdm.models.base.PromptKV`."""
    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def of(cls, context: torch.Tensor, blocks: torch.nn.ModuleList) -> WanPromptKV:
        """K/V of projected prompt tokens (B, L, D) in every block (once per prompt)."""
        pairs = [_prompt_kv(block.attn2, context) for block in blocks]
        return cls(torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs]))

    def rows(self, count: int) -> WanPromptKV:
        return WanPromptKV(self.k[:, :count], self.v[:, :count])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v))

    def __len__(self) -> int:
        return self.k.shape[1]


def _heads(attn: WanAttention, x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(2, (attn.heads, -1))  # (B, N, H*Dh) -> (B, N, H, Dh)


def _prompt_kv(attn: WanAttention, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention keys and values (B, L, H, Dh) of projected prompt tokens (B, L, D)."""
    return _heads(attn, attn.norm_k(attn.to_k(context))), _heads(attn, attn.to_v(context))


def _output(attn: WanAttention, out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, N, H, Dh) attention output -> the module's output (B, N, D)."""
    return attn.to_out[1](attn.to_out[0](out.flatten(2).type_as(like)))


class CausalSelfAttention:
    """Block ``layer``'s self-attention processor (module docstring)."""

    def __init__(self, layer: int):
        self.layer = layer
        self.hooks = HookRegistry()

    def __call__(self, attn: WanAttention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, rotary_emb: AttentionPass | None = None) -> torch.Tensor:
        return self.hooks(self.attend, attn, hidden_states, rotary_emb)

    def attend(self, attn: WanAttention, x: torch.Tensor, ctx: AttentionPass) -> torch.Tensor:
        q = _heads(attn, attn.norm_q(attn.to_q(x)))  # (B, N, H, Dh)
        k = _heads(attn, attn.norm_k(attn.to_k(x)))
        v = _heads(attn, attn.to_v(x))
        q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            k, v = ctx.cache.update(self.layer, k, v, ctx.commit)  # (B, visible frames * S, H, Dh)
        return _output(attn, attention(q, k.to(q.dtype), v.to(q.dtype), ctx.mask, backend=ctx.backend), q)


class PromptAttention:
    """Block ``layer``'s cross-attention processor: the prompt's K/V precomputed (:class:`WanPromptKV`) or computed
    now from projected tokens (training, where each block's weights are only gathered inside its own forward)."""

    def __init__(self, layer: int):
        self.layer = layer

    def __call__(self, attn: WanAttention, hidden_states: torch.Tensor,
                 encoder_hidden_states: WanPromptKV | torch.Tensor | None = None, attention_mask=None,
                 rotary_emb=None) -> torch.Tensor:
        prompt = encoder_hidden_states
        if isinstance(prompt, WanPromptKV):
            k, v = prompt.k[self.layer], prompt.v[self.layer]
        else:
            k, v = _prompt_kv(attn, prompt)
        q = _heads(attn, attn.norm_q(attn.to_q(hidden_states)))  # (B, N, H, Dh)
        return _output(attn, attention(q, k.to(q.dtype), v.to(q.dtype)), q)
