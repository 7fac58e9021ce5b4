"""The interface every model family implements: what the sampler, the step caches, the trainers, LoRA, FSDP and compile
may use of a model, written down as protocols with shapes. Nothing above :mod:`ca2vdm.models` names a model class;
it asks the registry (:mod:`ca2vdm.models.registry`) for a model and speaks to it through :class:`CausalVideoModel`.

Shapes
------
A video in the model's space is ``(B, C, T, H, W)`` (``C, H, W`` = :attr:`CausalVideoModel.frame_shape`: pixels, or a
codec's latents), per-frame diffusion times ``(B, T)`` in [0, 1] (t = 1 is noise; conditioning frames get 0), labels
``(B,)``. Inside the block stack a pass is ``(B, T, S, D)`` tokens (S tokens per frame, width D): the form step caches
read (:class:`StackCall`), whatever layout a family's attention uses internally.

Three passes over the same weights (see :meth:`CausalVideoModel.__call__`): a full-sequence pass with the block-causal
mask (training, recompute baselines), teacher forcing (clean frames, then the noisy copy; training), and cached passes
over one chunk that read and write a :class:`ContextCache` (sampling).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ca2vdm.config import ModelConfig
from ca2vdm.encoders.text import TextEmbeddings, TextEncoder
from ca2vdm.models.hooks import HookRegistry


class ContextCache(Protocol):
    """A model's preallocated, bounded cache of the conditioning frames' keys and values, for one batch of rows
    (videos x guidance branches). Its layout is the family's own (the DiT: per-token temporal sequences; a joint 3-D
    attention model: frame slots of all tokens); the sampler only drives its life cycle."""

    batch: int              # rows it holds
    frames_committed: int   # frames committed since the last reset: the next chunk's position
    commits: int            # commit passes so far (a cost counter)
    # methods whose bookkeeping (write position, slots) is plain Python that changes every chunk: compiled blocks run
    # them eagerly (ca2vdm.sampling.compile), so they never guard on it
    EAGER_METHODS: tuple[str, ...]

    def rows(self, count: int) -> ContextCache:
        """A view of the first ``count`` rows (the conditional branch of a guided cache), sharing storage; for
        denoising passes only (never committed to)."""

    def commit(self, num_frames: int) -> None:
        """The chunk just run with ``commit=True`` becomes conditioning: advance the write position."""

    def reset(self) -> None:
        """Forget every committed frame (a switch re-caches or drops the window); no allocation."""

    def nbytes(self) -> int:
        """Bytes held (constant over the cache's life)."""


class PromptKV(Protocol):
    """Every block's cross-attention keys and values of a batch of prompts: computed once per prompt
    (:meth:`CausalVideoModel.text_kv`) and read by every pass of a generation."""

    def rows(self, count: int) -> PromptKV:
        """The first ``count`` prompts (views)."""

    def nbytes(self) -> int:
        """Bytes held."""


class StackCall(Protocol):
    """One call of the model's block stack as a step-caching policy sees it (:attr:`CausalVideoModel.step_cache_hooks`).

    ``x`` (B, T, S, D): the tokens entering the stack. A recompute pass leads with conditioning frames that
    :meth:`noisy` cuts off, so a policy decides alike in every cache mode. A commit pass writes the context cache and
    must run."""

    x: torch.Tensor
    commit: bool

    def noisy(self, tensor: torch.Tensor) -> torch.Tensor:
        """The frames being denoised of a (B, T, ...) tensor of this pass (the stack's input, output or residual)."""

    def modulated_input(self) -> torch.Tensor:
        """The first block's normalised, timestep-modulated input over the frames being denoised (TeaCache's
        indicator), (B, T', S, D)."""

    def run(self) -> torch.Tensor:
        """The stack's output (B, T, S, D), every block computed."""


@runtime_checkable
class CausalVideoModel(Protocol):
    """A causal video diffusion model: block-causal over chunks (:attr:`ModelConfig.layout`), so a conditioning
    frame's keys and values never depend on later frames and a :class:`ContextCache` holds them for every later
    denoising step. It predicts the flow velocity ``noise - x_0`` of every frame."""

    cfg: ModelConfig
    step_cache_hooks: HookRegistry  # the step-cache entry point: hooks around the block stack, called with a StackCall

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                 cache: ContextCache | None = None, commit: bool = False, frame_offset: int = 0,
                 num_cond_frames: int = 0, teacher_forcing: bool = False,
                 text: TextEmbeddings | PromptKV | None = None) -> torch.Tensor:
        """Velocity (B, C, T, H, W) of ``x`` (B, C, T, H, W) at per-frame times ``t`` (B, T), labels ``y`` (B,) (a
        label model; the null label for none).

        * ``cache`` None: the full sequence with the block-causal mask; ``frame_offset`` is the absolute index of
          x's first frame, ``num_cond_frames`` the leading conditioning frames.
        * ``teacher_forcing``: x is ``num_cond_frames`` clean frames then the noisy copy of the clip they start
          (each noisy chunk sees the clean chunks before it and itself).
        * ``cache`` given: x is one chunk placed after the cache's committed frames; with ``commit`` it is a
          finished chunk (t = 0) whose keys and values the cache keeps (the caller then calls ``cache.commit``).

        ``text`` (a text model): one prompt per row, as token vectors or their K/V (:meth:`text_kv`); always given.
        """

    @property
    def device(self) -> torch.device:
        """Where the weights are."""

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating-point type (the context cache's too)."""

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one frame in the model's space."""

    @property
    def null_label(self) -> int | None:
        """A label model's null label (guidance's unconditional branch); None for a model without labels."""

    @property
    def text_conditional(self) -> bool:
        """Whether the model reads prompts (cross-attention)."""

    def new_cache(self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                  sink_frames: int | None = None, sink_rope: str = "adjacent") -> ContextCache:
        """An empty context cache for ``batch`` rows (default: the model's device and dtype); ``sink_frames``: the
        sampler's attention sinks (None: ``cfg.sink_frames``), ``sink_rope``: where they sit in the rotary positions
        (``SamplerSettings.sink_rope``)."""

    def text_kv(self, text: TextEmbeddings) -> PromptKV:
        """Every block's cross-attention K/V of ``text`` (one prompt per row)."""

    def empty_text(self, batch: int, encoder: TextEncoder | None) -> TextEmbeddings:
        """The empty prompt for ``batch`` rows: no prompt, and guidance's unconditional branch. A family decides what
        it is (the DiT: no tokens, so only its learned null token; Wan: the encoded empty string)."""

    def repeated_blocks(self) -> nn.ModuleList:
        """The repeated transformer blocks: what compile, FSDP and activation checkpointing wrap one by one."""

    def attention_hooks(self) -> Iterator[tuple[Any, HookRegistry]]:
        """The hooks of every attention module by a key unique per module: where attention-level caches attach
        (FasterCache's output reuse). Their calls pass the module's arguments through and return its output."""


class ModelBase(nn.Module):
    """What every family's model class shares: where its weights are and in what type."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.is_floating_point()).dtype
