"""Preallocated, bounded cache of the conditioning frames' keys and values.

Layout
------
Temporal attention runs one sequence per spatial token and head, so per layer the keys are stored as
``(B * S * H, window, Dh)`` with ``window = max_context_frames + chunk_frames`` frame slots; all layers live in one
tensor ``(depth, B * S * H, window, Dh)``. With prefix-enhanced spatial attention, the spatial keys/values of the
last ``prefix_frames`` conditioning frames are kept as ``(depth, B, prefix_frames, S, H, Dh)``.

Life cycle (one cache per video, its rows holding both guidance branches; allocated once)
--------------------------------------------------------------------
1. Denoising a chunk of L frames: at every step each layer calls :meth:`KVCache.update` with the chunk's K/V.
   They go into the L ring slots after the last committed frame (scratch: the next step overwrites them) and the
   layer attends over every occupied slot. Attention is order-free over keys and the rotary phase is baked into
   each key, so ring order needs no reshuffling. The conditioning K/V are never recomputed: all denoising steps
   of the chunk share them.
2. Committing: the pipeline runs the finished (lightly re-noised) chunk once through the model at t=0 with
   ``commit=True``; its K/V land in the same slots and :meth:`KVCache.commit` advances the write position.
   That is the only time conditioning K/V are produced: once per chunk.
3. Eviction: once ``frames_committed + L`` exceeds the window, the next chunk's slots are those of the oldest
   frames, which are thereby evicted; the noisy chunk always sees exactly the last ``max_context_frames``
   committed frames. No allocation happens after construction (slot indices are memoised per chunk).

Attention sinks (``sink_frames`` = k > 0, as in StreamingLLM and LongLive)
-------------------------------------------------------------------------
The first k frames (the image condition and, optionally, whole chunks after it) live in slots ``0..k-1`` and are
never evicted; later frames rotate through the other ``window - k`` slots, so a chunk sees the k sinks and the last
``max_context_frames - k`` committed frames: the same number of keys as without sinks. Positions: a sink is placed
directly before the oldest frame still in the ring, sink i at ``r0 - k + i``, so the visible frames always form one
contiguous run of positions, exactly the layout of a training clip whose first k frames are the video's first k
frames followed by a later run of frames (``ClipDataset.clip_segments``). The largest query-key distance stays
``window - 1`` however long the video gets. Sink keys are kept as written (rotated to their own positions
``0..k-1``) and, when a chunk starts, rotated by ``r0 - k`` more into their slots: rotary phases add, and the
periodic table covers every shift. Until the ring first wraps, ``r0 = k`` and the sinks sit at their true positions.
The positions cannot tell how far the ring is from the sinks, but the fill of the window can: a ring that does not
yet fill it happens only at a video's start, right after the sinks. So training shows chunks with less than a full
window of context only in clips whose run starts right after the sinks (``training.chunk_weights``); a model
trained on them after gaps too blurred the first chunks of every video (``scripts/experiments/bench_sampler_drift.py``).
"""
from __future__ import annotations

import copy

import torch

from ca2vdm.models.attention import apply_rope


class FrameRing:
    """The slot bookkeeping every context cache of frame slots shares: ``window`` slots, the first ``sink_frames`` of
    them sinks, ``frames_committed`` frames so far; the rest (``k``, the layout, how sinks move) is the cache's own."""
    window: int
    max_context_frames: int
    sink_frames: int
    frames_committed: int
    k: torch.Tensor
    _slots_key: tuple[int, int] | None
    _slots: torch.Tensor | None

    def _slot_index(self, num_frames: int) -> torch.Tensor:
        """The slots (num_frames,) of the chunk after the committed frames, memoised per chunk: frames fill the slots
        in order, then take those of the oldest ring frames; when a chunk after the sinks starts, the sinks move
        (:meth:`_move_sinks`). ValueError for a chunk longer than the cache's or one that straddles the sinks."""
        key = (self.frames_committed, num_frames)
        if key != self._slots_key:
            F, k, chunk = self.frames_committed, self.sink_frames, self.window - self.max_context_frames
            if num_frames > chunk:
                raise ValueError(f"a chunk of {num_frames} frames does not fit the cache, which was built for chunks "
                                 f"of at most {chunk}")
            if F < k < F + num_frames:
                raise ValueError(f"frames {F}..{F + num_frames - 1} straddle the {k} sink frames; sinks are whole "
                                 "chunks")
            frames = torch.arange(F, F + num_frames, device=self.k.device)
            self._slots = frames if F < k else k + (frames - k) % (self.window - k)
            self._slots_key = key
            if F >= k > 0:
                self._move_sinks(max(0, F + num_frames - self.window))
        return self._slots

    def _move_sinks(self, shift: int) -> None:
        """Place the sinks just before the oldest ring frame, ``shift`` frames after where they were written."""


class KVCache(FrameRing):
    """Ring buffer of per-layer temporal K/V (and optional spatial prefix K/V) for conditioning frames: the DiT's
    :class:`~ca2vdm.models.base.ContextCache`."""

    # The cache's bookkeeping (write position, slots, visible frames) is plain Python that changes every chunk; under
    # torch.compile these methods run eagerly (ca2vdm.sampling.compile applies that when it compiles), so compiled
    # blocks never guard on it.
    EAGER_METHODS = ("update", "prefix", "store_prefix")

    def __init__(self, depth: int, batch: int, tokens: int, heads: int, head_dim: int, max_context_frames: int,
                 chunk_frames: int, prefix_frames: int = 0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, sink_frames: int = 0,
                 rope: tuple[torch.Tensor, torch.Tensor] | None = None, realign_sinks: bool = True):
        """``rope``: the model's (period, head_dim / 2) cos and sin tables, needed to move sinks (``sink_frames``).
        ``realign_sinks=False`` leaves the sinks at the positions they were written at (StreamingLLM's sinks: their
        distance to the chunk grows, and wraps around the rotary period), for comparison."""
        if sink_frames and (rope is None or not 0 < sink_frames < max_context_frames):
            raise ValueError(f"sink_frames={sink_frames} needs the rotary tables and must be in [1, "
                             f"max_context_frames={max_context_frames})")
        self.window = max_context_frames + chunk_frames
        self.batch = batch
        self.max_context_frames = max_context_frames
        self.k = torch.zeros(depth, batch * tokens * heads, self.window, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.prefix_frames = prefix_frames
        prefix_shape = (depth, batch, prefix_frames, tokens, heads, head_dim)
        self.prefix_k = torch.zeros(prefix_shape, device=device, dtype=dtype) if prefix_frames else None
        self.prefix_v = torch.zeros_like(self.prefix_k) if prefix_frames else None
        self.sink_frames, self.realign_sinks = sink_frames, realign_sinks
        self.sink_k = self.k[:, :, :sink_frames].clone()  # (depth, B*S*H, k, Dh) sink keys at positions 0..k-1
        self._sink_slots = self.k[:, :, :sink_frames]  # where they are read, every row (row views keep it)
        self.rope = rope
        self.frames_committed = 0
        self.commits = 0
        self._slots_key: tuple[int, int] | None = None
        self._slots: torch.Tensor | None = None

    def rows(self, count: int) -> KVCache:
        """A view of the first ``count`` batch rows (the conditional branch of a guided cache) for denoising
        passes that skip the other rows; it shares storage and must not be committed to."""
        view = copy.copy(self)
        rows = self.k.shape[1] // self.batch  # sequences per video
        view.k, view.v = self.k[:, :count * rows], self.v[:, :count * rows]
        if self.prefix_frames:
            view.prefix_k, view.prefix_v = self.prefix_k[:, :count], self.prefix_v[:, :count]
        view.batch = count
        return view

    def nbytes(self) -> int:
        """Bytes held by the cache tensors (constant over the cache's life)."""
        tensors = [self.k, self.v, self.sink_k] + ([self.prefix_k, self.prefix_v] if self.prefix_frames else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def _move_sinks(self, shift: int) -> None:
        """Place the sinks before the oldest frame in the ring: rotated by r0 - k = F + L - window (or 0); with
        ``realign_sinks=False`` they stay at the positions they were written at."""
        if self.realign_sinks:
            cos, sin = (table[shift % table.shape[0]] for table in self.rope)  # (Dh/2,)
            self._sink_slots.copy_(apply_rope(self.sink_k, cos, sin))  # every row, also from a row view

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               commit: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the current chunk's temporal K/V (B*S*H, L, Dh) into its slots; return all visible K/V.

        A denoising pass (not ``commit``) that carries gradients (a training rollout's exit step,
        :mod:`ca2vdm.training.distill_rollout`) reads the same slots from a copy and leaves the buffer alone: its K/V
        are scratch, and the commit pass that follows overwrites those slots in place, which would corrupt what
        autograd saved."""
        slots = self._slot_index(k.shape[1])
        visible = min(self.window, self.frames_committed + k.shape[1])
        if not commit and (k.requires_grad or v.requires_grad):
            keys, values = self.k[layer].index_copy(1, slots, k), self.v[layer].index_copy(1, slots, v)
            return keys[:, :visible], values[:, :visible]
        self.k[layer].index_copy_(1, slots, k)
        self.v[layer].index_copy_(1, slots, v)
        return self.k[layer, :, :visible], self.v[layer, :, :visible]  # (B*S*H, visible, Dh)

    def prefix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Spatial K/V (B, n, S, H, Dh) of the last n <= prefix_frames committed frames, or None if none."""
        n = min(self.prefix_frames, self.frames_committed)
        if n == 0:
            return None
        if torch.is_grad_enabled():  # a pass with gradients keeps copies: the next commit overwrites the buffer
            return self.prefix_k[layer, :, :n].clone(), self.prefix_v[layer, :, :n].clone()
        return self.prefix_k[layer, :, :n], self.prefix_v[layer, :, :n]

    def store_prefix(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """During a commit pass: keep the spatial K/V (B, L, S, H, Dh) of the newest prefix_frames frames."""
        if not self.prefix_frames:
            return
        n = min(self.prefix_frames, self.frames_committed)
        for buf, new in ((self.prefix_k[layer], k), (self.prefix_v[layer], v)):
            kept = torch.cat([buf[:, :n], new], dim=1)[:, -self.prefix_frames:]
            buf[:, :kept.shape[1]].copy_(kept)

    def reset(self) -> None:
        """Forget every committed frame (a prompt switch: re-cached or reset); the next commit writes from the first
        slot again. The tensors stay (no allocation)."""
        self.frames_committed = 0
        self._slots_key = None

    def commit(self, num_frames: int) -> None:
        """Mark the chunk just run with ``commit=True`` as conditioning: advance the write position (a sink chunk's
        keys are also kept as written)."""
        F = self.frames_committed
        if F < self.sink_frames:
            self.sink_k[:, :, F:F + num_frames] = self.k[:, :, F:F + num_frames]
        self.frames_committed += num_frames
        self.commits += 1
