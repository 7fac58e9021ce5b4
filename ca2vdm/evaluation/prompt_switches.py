"""A prompt switch measured (``ca2vdm eval prompts``): how many chunks a video takes to follow the new prompt, and
the seam the switch leaves.

Videos from "a A1 S1" are switched to "a A2 S2" (another colour and shape, ``SWITCH_PAIRS``) at generated chunk
``at`` in each mode (recache, keep, reset, flush). ``chunks_to_follow`` = chunks from the switch until every later
chunk matches the new prompt, read back by :mod:`ca2vdm.evaluation.prompt_adherence` (1: the first chunk after the
switch does; the median over videos, None if most never follow); ``chunks_to_colour`` = the same for the new prompt's
colour alone; ``seam`` = the change from the last frame before the switch to the first after it over the mean
frame-to-frame change inside the chunks around it (:func:`~ca2vdm.evaluation.seams.seam_ratio`). Chunks are
numbered as the pipeline yields them (0: the first chunk after the first frame) and laid out by the model's
:class:`~ca2vdm.config.ChunkLayout`. Videos: (T, H, W, 3) uint8.
"""
from __future__ import annotations

import numpy as np
import torch

from ca2vdm.config import ChunkLayout
from ca2vdm.evaluation.metrics import motion
from ca2vdm.evaluation.prompt_adherence import ShapeReader, prompted_videos, read_back
from ca2vdm.evaluation.seams import seam, seam_ratio
from ca2vdm.generation.api import Pipeline

SWITCH_PAIRS = [(("red", "circle"), ("blue", "square")), (("yellow", "triangle"), ("cyan", "circle")),
                (("green", "square"), ("magenta", "triangle")), (("cyan", "square"), ("yellow", "circle"))]
FOLLOW_WITHIN = 6  # chunks_to_follow is None past this
MODES = ("recache", "keep", "reset", "flush")


def chunk_span(layout: ChunkLayout, k: int) -> slice:
    """The frames of generated chunk ``k`` (0: the first chunk after the first frame)."""
    chunk = k + int(layout.first_frame_chunk)
    return slice(layout.start_of(chunk), layout.start_of(chunk + 1))


def chunk_reads(video: np.ndarray, reader: ShapeReader, layout: ChunkLayout) -> list[tuple]:
    """(colour, shape) read back from each generated chunk of a (T, H, W, 3) video (a last partial chunk too)."""
    chunks = layout.chunk_of(len(video) - 1) + 1 - int(layout.first_frame_chunk)
    return [read_back(torch.from_numpy(video[chunk_span(layout, k)]), reader) for k in range(chunks)]


def switch_seam(video: np.ndarray, layout: ChunkLayout, at: int, around: range) -> float:
    """The change across the seam before generated chunk ``at`` over the mean frame-to-frame change inside the
    generated chunks ``around``."""
    inside = float(np.mean([motion(video[chunk_span(layout, k)]) for k in around]))
    return seam_ratio([seam(video, chunk_span(layout, at).start)], [inside])


def followed(reads: list, target, at: int) -> int | None:
    """Chunks from the switch until every later chunk's read (colour and shape, or colour alone) matches ``target``
    (1 = at once); None if not within reach."""
    after = reads[at:at + FOLLOW_WITHIN]
    for k in range(len(after)):
        if all(r == target for r in after[k:]):
            return k + 1
    return None


def _median(chunks: list[int | None]) -> int | None:
    """The median of per-video chunks to follow (a video that never follows counts as later than any), None if most
    never follow."""
    ranked = sorted(f if f is not None else FOLLOW_WITHIN + 1 for f in chunks)
    median = ranked[len(ranked) // 2]
    return None if median > FOLLOW_WITHIN else median


def switch_eval(pipe: Pipeline, reader: ShapeReader, seeds: int, at: int, after: int, seed: int
                ) -> tuple[dict, dict]:
    """Per mode: ``chunks_to_follow``, ``seam``, the per-video chunks to follow and the share of videos that follow;
    and {"videos": every mode's videos and the unswitched ones ("none"), "seam_without_switch": the seam at that
    chunk of unswitched videos, "at_frame": the first frame after the switch}."""
    layout = pipe.model.cfg.layout
    old = [f"a {c} {s}" for (c, s), _ in SWITCH_PAIRS for _ in range(seeds)]
    new = [f"a {c} {s}" for _, (c, s) in SWITCH_PAIRS for _ in range(seeds)]
    targets = [t for _, t in SWITCH_PAIRS for _ in range(seeds)]
    around = range(at - 2, at + after)
    results, videos = {}, {}
    for mode in MODES:
        pixels = prompted_videos(pipe, old, at + after, seed, (at, new, mode))
        reads = [chunk_reads(v, reader, layout) for v in pixels]
        follow = [followed(r, t, at) for r, t in zip(reads, targets)]
        colour = [followed([c for c, _ in r], t[0], at) for r, t in zip(reads, targets)]
        results[mode] = {"chunks_to_follow": _median(follow), "chunks_to_colour": _median(colour),
                         "seam": float(np.mean([switch_seam(v, layout, at, around) for v in pixels])),
                         "per_video_chunks_to_follow": follow, "followed": sum(f is not None for f in follow) / len(
                             follow), "per_video_chunks_to_colour": colour}
        videos[mode] = pixels
        print(f"switch {mode:8s} chunks_to_follow {results[mode]['chunks_to_follow']} (per video {follow}), "
              f"chunks_to_colour {results[mode]['chunks_to_colour']} (per video {colour}), seam "
              f"{results[mode]['seam']:.2f}x the change inside chunks")
    plain = prompted_videos(pipe, old, at + after, seed)
    videos["none"] = plain
    return results, {"videos": videos, "seam_without_switch": float(np.mean(
        [switch_seam(v, layout, at, around) for v in plain])), "at_frame": chunk_span(layout, at).start}
