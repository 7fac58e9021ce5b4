"""The causal Wan's context cache: frame slots holding every token's keys and values of a latent frame, per block,
preallocated and bounded (the model's :class:`~ca2vdm.models.base.ContextCache`).

Layout
------
Joint 3-D attention reads all tokens of the frames it sees, so per block the keys are stored as ``(B, window, S, H,
Dh)`` with ``window = max_context_frames + chunk_frames`` frame slots of S tokens; all blocks live in one tensor
``(depth, B, window, S, H, Dh)``. A pass reads the first ``visible`` slots as ``(B, visible * S, H, Dh)``: a view,
no copy. Keys are stored after RoPE (as Self-Forcing stores them), so attention needs no positions at read time and
slot order is free: keys are order-free once each carries its rotary phase.

Life cycle (as the DiT's :class:`~ca2vdm.models.kv_cache.KVCache`): every denoising step writes the chunk's K/V into
its slots and attends over the visible ones; the commit pass (the finished chunk at ``cond_noise``, told t = 0:
Self-Forcing's ``context_noise``) writes them for good; once the window is full a chunk takes the slots of the oldest
frames. Sinks (``sink_frames`` = k, LongLive's ``sink_size``) keep slots 0..k-1 for good. No allocation after
construction.

Positions (``model.positions``)
------------------------------
* ``absolute`` (Self-Forcing, CausVid, LongLive): a frame's phase is its index in the video, sinks included, so a
  query sees a sink ever farther away; valid while the index stays below ``rope_max_seq_len`` (Wan's table, 1024
  latent frames, 68 s at 16 fps): past it :meth:`frame_positions` refuses. A prompt switch re-commits the window
  (:meth:`reset`, then commit passes): the re-committed frames take their own indices again, as LongLive's re-cache
  writes them back at their positions.
* ``ring``: the scores of the window's frames numbered from its first one, the sinks just before the oldest frame
  of the ring (the DiT's scheme, ``ca2vdm.models.kv_cache``): no distance ever exceeds the window, so a video may be
  any length. Keys carry their frame index (phases computed in float64, exact at any index), and the sink keys, kept
  as written, are rotated in time into place when a chunk starts (rotations add); without sinks both modes give the
  same scores.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from ca2vdm.models.kv_cache import FrameRing

# moves keys (N, tokens, heads, head_dim) by a number of frames in time (ca2vdm.models.wan.rope.time_shift applied)
TimeShift = Callable[[torch.Tensor, int], torch.Tensor]


class WanCache(FrameRing):
    """Frame slots of every block's keys and values (see the module docstring)."""

    # bookkeeping (slots, positions) is plain Python that changes every chunk: compiled blocks run these eagerly
    EAGER_METHODS = ("update", "frame_positions")

    def __init__(self, depth: int, batch: int, tokens: int, heads: int, head_dim: int, max_context_frames: int,
                 chunk_frames: int, sink_frames: int = 0, positions: str = "ring", rope_max_seq_len: int = 1024,
                 shift: TimeShift | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, realign_sinks: bool = True):
        """``shift``: moves keys in time (ring positions with sinks need it). ``realign_sinks=False`` leaves ring
        sinks at the positions they were written at (their own indices, as absolute positions do)."""
        if sink_frames and positions == "ring" and shift is None:
            raise ValueError("ring positions with sinks need the model's time shift of keys")
        self.window = max_context_frames + chunk_frames
        self.batch, self.tokens = batch, tokens
        self.max_context_frames, self.sink_frames = max_context_frames, sink_frames
        self.positions, self.rope_max_seq_len, self.shift = positions, rope_max_seq_len, shift
        self.k = torch.zeros(depth, batch, self.window, tokens, heads, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        moved = sink_frames if positions == "ring" and realign_sinks else 0  # kept as written, moved per chunk
        self.sink_k = self.k[:, :, :moved].clone()  # (depth, B, k, S, H, Dh)
        self._sink_slots = self.k[:, :, :moved]  # where they are read, every row (row views keep it)
        self.frames_committed = 0
        self.commits = 0
        self._committed: list[int] = []  # absolute mode: positions of the frames committed since the last reset
        self._replay: list[int] = []     # absolute mode: positions the frames re-committed after a reset take
        self._resume = 0                 # absolute mode: the position of the first new frame after them
        self._slots_key: tuple[int, int] | None = None
        self._slots: torch.Tensor | None = None

    def rows(self, count: int) -> WanCache:
        """A view of the first ``count`` rows (the conditional branch of a guided cache), for denoising passes only."""
        view = copy.copy(self)
        view.k, view.v, view.batch = self.k[:, :count], self.v[:, :count], count
        return view

    def nbytes(self) -> int:
        """Bytes held by the cache tensors (constant over its life)."""
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.sink_k))

    def frame_positions(self, num_frames: int) -> list[int]:
        """The rotary positions of the next ``num_frames`` frames (the chunk a pass runs now)."""
        F = self.frames_committed
        if self.positions == "ring":
            return list(range(F, F + num_frames))
        replay = self._replay
        out = [replay[i] if i < len(replay) else self._resume + i - len(replay) for i in range(F, F + num_frames)]
        if out[-1] >= self.rope_max_seq_len:
            raise ValueError(f"frame {out[-1]} is past Wan's RoPE table (model.rope_max_seq_len="
                             f"{self.rope_max_seq_len}) in absolute positions; generate fewer frames or use "
                             "model.positions=ring, whose positions stay inside the window at any length")
        return out

    def _move_sinks(self, shift: int) -> None:
        """Ring positions: the sinks, kept as written, rotated ``shift`` frames on into their slots (absolute
        positions, or ``realign_sinks=False``, leave them at their own indices)."""
        if self.sink_k.shape[2]:
            moved = self.shift(self.sink_k.flatten(0, 1).flatten(1, 2), shift)  # (depth*B, k*S, H, Dh)
            self._sink_slots.copy_(moved.reshape(self.sink_k.shape))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               commit: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the chunk's roped keys and values (B, L * S, H, Dh) of block ``layer`` into its slots; return every
        visible frame's, (B, visible * S, H, Dh).

        A denoising pass that carries gradients (a training rollout's exit step) reads a copy with the chunk written
        and leaves the buffer alone: the commit pass that follows overwrites those slots in place."""
        L = k.shape[1] // self.tokens
        slots = self._slot_index(L)
        visible = min(self.window, self.frames_committed + L)
        k, v = (a.unflatten(1, (L, self.tokens)) for a in (k, v))  # (B, L, S, H, Dh)
        if not commit and (k.requires_grad or v.requires_grad):
            keys, values = self.k[layer].index_copy(1, slots, k), self.v[layer].index_copy(1, slots, v)
            return keys[:, :visible].flatten(1, 2), values[:, :visible].flatten(1, 2)
        self.k[layer].index_copy_(1, slots, k.to(self.k.dtype))
        self.v[layer].index_copy_(1, slots, v.to(self.v.dtype))
        return self.k[layer, :, :visible].flatten(1, 2), self.v[layer, :, :visible].flatten(1, 2)

    def commit(self, num_frames: int) -> None:
        """The chunk just run with ``commit=True`` becomes conditioning: advance the write position (a ring sink
        chunk's keys are also kept as written)."""
        F = self.frames_committed
        if F < self.sink_k.shape[2]:
            self.sink_k[:, :, F:F + num_frames] = self.k[:, :, F:F + num_frames]
        if self.positions == "absolute":
            self._committed += self.frame_positions(num_frames)
        self.frames_committed += num_frames
        self.commits += 1

    def reset(self) -> None:
        """Forget every committed frame (a prompt switch re-caches or drops the window); no allocation. In absolute
        positions the frames committed next (a re-cache: the window's sinks, then its other frames, oldest first)
        take the positions they had, and new frames continue where the video was."""
        if self.positions == "absolute":
            k, kept = self.sink_frames, self.max_context_frames - self.sink_frames
            done = self._committed
            self._resume = done[-1] + 1 if done else self._resume
            self._replay = done[:k] + done[max(k, len(done) - kept):] if len(done) > k else done[:k]
            self._committed = []
        self.frames_committed = 0
        self._slots_key = None
