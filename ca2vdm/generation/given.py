"""A given video to continue (``--first-frame``): streamed into the outputs, and only the frames that can still
influence the next chunk kept (memory flat in the given video's length)."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import torch

from ca2vdm.config import ModelConfig
from ca2vdm.io.video import stream_video, to_uint8
from ca2vdm.io.video_writer import VideoWriter


def reach(cfg: ModelConfig) -> int:
    """How many frames back a given frame can still influence the next chunk (see :func:`conditioning_start`)."""
    return cfg.max_context_frames + (cfg.depth - 1) * (cfg.max_context_frames + cfg.chunk_frames - 1)


def conditioning_start(cfg: ModelConfig, cache: str, total: int, sinks: int | None = None) -> int:
    """The first frame of a ``total``-frame given video that can still influence the chunks after it; the frames
    before it need not be committed (``LongVideoPipeline.start(frames_before=...)``).

    The next chunk attends to the last ``max_context_frames`` frames. With the KV cache, a frame's keys in layer l
    were computed by attending to the window before its chunk in layer l - 1, so the influence reaches back
    ``depth`` windows, each widened by up to a chunk for alignment. The result is a chunk boundary; 0 in cache mode
    ``full``. Attention sinks (``sinks``, default ``model.sink_frames``: the pipeline's) are kept besides
    (``LongVideoPipeline.start``): the result is then 0 or past them.
    """
    if cache == "full":
        return 0
    start = cfg.layout.floor(max(0, total - reach(cfg)))
    return start if start > (cfg.sink_frames if sinks is None else sinks) else 0


def stream_given(path: str, size: int, cfg: ModelConfig, cache: str, writers: Iterable[VideoWriter],
                 poll: Callable[[], None], sinks: int | None = None) -> tuple[torch.Tensor, int]:
    """Stream a given image or video at ``size`` into ``writers``, holding only the frames that can still influence
    the next chunk; return those (3, T, H, W), the attention sinks (``sinks``, default the model's) first, and how
    many frames came before the others."""
    sinks = cfg.sink_frames if sinks is None else sinks
    most = reach(cfg) + cfg.chunk_frames - 1  # the most frames conditioning_start keeps
    kept: deque[torch.Tensor] = deque(maxlen=None if cache == "full" else most)
    kept_sinks: list[torch.Tensor] = []
    writers, total = list(writers), 0
    for pixels in stream_video(path, size=size):  # (3, T, H, W) batches
        poll()
        for writer in writers:
            writer.write(to_uint8(pixels))
        frames = pixels.unbind(1)
        kept_sinks += frames[:sinks - len(kept_sinks)]
        kept.extend(frames)
        total += pixels.shape[1]
    start = conditioning_start(cfg, cache, total, sinks)
    return torch.stack((kept_sinks if start else []) + list(kept)[start - total:], dim=1), start
