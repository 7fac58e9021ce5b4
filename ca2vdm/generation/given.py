"""A given video to continue (``--first-frame``): streamed into the outputs, and only the frames that can still
influence the next chunk kept (memory flat in the given video's length with a per-frame codec).

A codec that compresses time (``codec.temporal``: AutoencoderKLWan encodes frame 0 alone, then groups of 4) encodes a
video from its first frame through its causal cache, so its given video is kept whole, and only frames that fill
whole latent frames are used: the last frames of an unfinished group are neither written nor conditioned on.
"""
from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterable

import torch

from ca2vdm.config import ModelConfig, TemporalCompression
from ca2vdm.io.video import stream_video, to_uint8
from ca2vdm.io.video_writer import VideoWriter


def reach(cfg: ModelConfig) -> int:
    """How many frames back a given frame can still influence the next chunk (see :func:`conditioning_start`)."""
    return cfg.max_context_frames + (cfg.depth - 1) * (cfg.max_context_frames + cfg.chunk_frames - 1)


def conditioning_start(cfg: ModelConfig, cache: str, total: int,
                       temporal: TemporalCompression = TemporalCompression(), sinks: int | None = None) -> int:
    """The first frame of a ``total``-frame given video that can still influence the chunks after it; the frames
    before it need not be committed (``LongVideoPipeline.start(frames_before=...)``). 0 with a codec that compresses
    time (``temporal``), which encodes a video from its first frame.

    The next chunk attends to the last ``max_context_frames`` frames. With the KV cache, a frame's keys in layer l
    were computed by attending to the window before its chunk in layer l - 1, so the influence reaches back
    ``depth`` windows, each widened by up to a chunk for alignment. The result is a chunk boundary; 0 in cache mode
    ``full``. Attention sinks (``sinks``, default ``model.sink_frames``: the pipeline's) are kept besides
    (``LongVideoPipeline.start``): the result is then 0 or past them.
    """
    if cache == "full" or temporal.frames_per_latent > 1:
        return 0
    start = cfg.layout.floor(max(0, total - reach(cfg)))
    return start if start > (cfg.sink_frames if sinks is None else sinks) else 0


def stream_given(path: str, size: int, cfg: ModelConfig, cache: str, temporal: TemporalCompression,
                 writers: Iterable[VideoWriter], poll: Callable[[], None],
                 sinks: int | None = None) -> tuple[torch.Tensor, int]:
    """Stream a given image or video at ``size`` into ``writers``, holding only the frames that can still influence
    the next chunk; return those (3, T, H, W), the attention sinks (``sinks``, default the model's) first, and how
    many frames came before the others. Frames are written and kept once they fill whole latent frames of the codec
    (``temporal``)."""
    sinks = cfg.sink_frames if sinks is None else sinks
    most = reach(cfg) + cfg.chunk_frames - 1  # the most frames conditioning_start keeps
    whole_video = cache == "full" or temporal.frames_per_latent > 1
    kept: deque[torch.Tensor] = deque(maxlen=None if whole_video else most)
    kept_sinks: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []  # read, but not yet a whole latent frame
    writers, total = list(writers), 0
    for pixels in stream_video(path, size=size):  # (3, T, H, W) batches
        poll()
        pending += pixels.unbind(1)
        total += pixels.shape[1]
        ready = len(pending) - (total - temporal.start_of(temporal.latents_in(total)))
        if ready:
            frames, pending = pending[:ready], pending[ready:]
            for writer in writers:
                writer.write(to_uint8(torch.stack(frames, dim=1)))
            kept_sinks += frames[:sinks - len(kept_sinks)]
            kept.extend(frames)
    if pending:
        warnings.warn(f"{path}: its last {len(pending)} frame(s) are left out: the codec encodes the first frame "
                      f"alone, then groups of {temporal.frames_per_latent}", stacklevel=2)
    total -= len(pending)
    start = conditioning_start(cfg, cache, temporal.latents_in(total), temporal, sinks)  # a frame of the model's
    first = temporal.start_of(start)  # its first pixel frame
    return torch.stack((kept_sinks if start else []) + list(kept)[first - total:], dim=1), start
