"""Where the server's frames come from: an offered checkpoint's pipeline, as uint8 pixels, one chunk at a time.

This is the only place the server touches the model; everything else sees :class:`PixelChunk` values.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..generate import model_input, model_output
from ..pipeline import ChunkResult, LongVideoPipeline
from ..step_cache import build_step_cache
from ..video_io import read_video, to_uint8
from .catalog import Offered


@dataclass
class PixelChunk:
    """Frames ready to show, and what computing them cost."""
    pixels: np.ndarray          # (L, H, W, 3) uint8
    kind: str                   # "given" (the uploaded first frames), "first" (the model's first frame) or "chunk"
    computed: int = 0           # block-stack evaluations run
    skipped: int = 0            # evaluations a step-caching policy skipped


def _shown(codec, result: ChunkResult, kind: str) -> PixelChunk:
    return PixelChunk(model_output(codec, result.frames), kind, result.model_evals, result.skipped_evals)


def pixel_chunks(offered: Offered, *, label: int | None, seed: int, chunks: int | None, step_cache: str,
                 threshold: float, first_frame: Path | None, poll: Callable[[], None]) -> Iterator[PixelChunk]:
    """The video as the command line makes it (the same pipeline, codec and recorded sampler settings): the given
    first frames or the model's first frame, then ``chunks`` chunks (None: until the caller stops iterating).

    ``poll()`` runs after every denoising step; it raises to abandon the chunk in progress. A given video
    contributes its last ``max_context_frames`` frames (all the next chunk attends to), shown first.
    """
    cfg = offered.cfg
    policy = build_step_cache(step_cache, threshold, offered.meta.get("teacache_coefficients"))
    pipe = LongVideoPipeline.from_metadata(offered.model, offered.meta, step_cache=policy)
    given = None
    if first_frame is not None:
        video = read_video(first_frame, num_frames=cfg.max_context_frames, size=offered.size)  # (3, T, H, W)
        yield PixelChunk(to_uint8(video), "given")
        given = model_input(offered.codec, video)  # (1, C, T, h, w)
    state = pipe.start(label=label, seed=seed, first_frames=given)
    on_step = lambda i: poll()  # noqa: E731
    if given is None and cfg.first_frame_chunk:
        yield _shown(offered.codec, pipe.next_chunk(state, on_step=on_step), "first")
    for _ in count() if chunks is None else range(chunks):
        yield _shown(offered.codec, pipe.next_chunk(state, on_step=on_step), "chunk")
