"""Where the server's frames come from: an offered checkpoint's pipeline, as uint8 pixels, one chunk at a time.

This is the only place the server touches the model; everything else sees :class:`PixelChunk` values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ca2vdm.io.video import read_video, to_uint8
from ca2vdm.serve.catalog import Offered


@dataclass
class PixelChunk:
    """Frames ready to show, and what computing them cost."""
    pixels: np.ndarray          # (L, H, W, 3) uint8
    kind: str                   # "given" (the uploaded first frames), "first" (the model's first frame) or "chunk"
    computed: int = 0           # block-stack evaluations run
    skipped: int = 0            # evaluations a step-caching policy skipped


def pixel_chunks(offered: Offered, *, label: int | None, seed: int, chunks: int | None, step_cache: str,
                 step_cache_options: dict, first_frame: Path | None, poll: Callable[[], None],
                 prompt: str | None = None, switch_mode: str = "recache",
                 switches: Callable[[int], list] = lambda upcoming: []) -> Iterator[PixelChunk]:
    """The video as ``ca2vdm.load_pipeline(...).generate`` (and so the command line) makes it, with the step cache
    ``step_cache`` and its settings (checked as :func:`ca2vdm.config.step_cache_config` does): the given first frames
    or the model's first frame, then ``chunks`` chunks (None: until the caller stops iterating).

    ``poll()`` runs after every denoising step; it raises to abandon the chunk in progress. A given video
    contributes its last ``max_context_frames`` frames (all the next chunk attends to), shown first; with a codec that
    compresses time (Wan's VAE) it is encoded whole, its frames up to the last whole group of the codec.
    ``prompt``: a text model's prompt; ``switches(upcoming)``, called before each chunk (``upcoming``: its index,
    -1 for the first frame), returns the switches (``protocol.SwitchMessage``) asked for since the last call, each
    with the chunk ``at`` it applies from (``run.RunControl`` resolves it and refuses a second one for a chunk); they
    are scheduled on the generation's own stream with ``switch_mode``, as the command line's and the API's are.
    """
    # one model for every page: a pipeline never changes the model it samples
    pipe = offered.pipe.with_settings(step_cache=step_cache, step_cache_options=step_cache_options)
    given = None
    if first_frame is not None:
        temporal = pipe.codec.temporal  # a codec that compresses time encodes the video whole, in whole groups
        last = None if temporal.frames_per_latent > 1 else offered.cfg.max_context_frames
        given = read_video(first_frame, num_frames=last, size=pipe.size)  # (3, T, H, W)
        given = given[:, :temporal.start_of(temporal.latents_in(given.shape[1]))]
        yield PixelChunk(to_uint8(given), "given")
    video = pipe.generate(chunks, label=label, seed=seed, first_frames=given, on_step=lambda i: poll(),
                          prompt=prompt)
    upcoming = -1 if offered.cfg.first_frame_chunk and given is None else 0
    while True:
        for asked in switches(upcoming):
            video.switch(prompt=asked.prompt, label=asked.label, at=asked.at, mode=switch_mode)
        chunk = next(video, None)
        if chunk is None:
            return
        yield PixelChunk(chunk.pixels[0], "first" if chunk.index < 0 else "chunk", chunk.model_evals,
                         chunk.skipped_evals)
        upcoming = video.next_index
