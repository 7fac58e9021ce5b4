"""Drift of a generated long video, chunk by chunk, against the training data (``ca2vdm eval long-video``).

A chunk's row: colour-histogram distance to the training data's mean histogram (``hist``: 0 same, 1 disjoint) and to
the nearest training chunk's (``nn``); sharpness, motion, brightness and contrast relative to the training data (1 =
as in training); the share of pixels clearly brighter than the background (``fg``: the shape is still there); the
seam before it relative to the motion inside it (:mod:`ca2vdm.evaluation.seams`); the class of the training chunk whose
shape (fill of its bounding box, aspect; :func:`~ca2vdm.evaluation.metrics.shape_descriptor`) is nearest; and the
colour distance to the video's first ``START`` chunks (``hist_start``). The reference row holds the same metrics
averaged over the chunks of a sample of training videos, with their spread between videos. Chunks are the given
first frames, then :class:`~ca2vdm.config.ChunkLayout`'s chunks of the frames after them. The drift bar over these
rows is :mod:`ca2vdm.evaluation.drift_summary`. Videos are (3, T, H, W) float tensors in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ca2vdm.config import ChunkLayout
from ca2vdm.data.clips import DEFAULT_MANIFEST, VIDEO_EXTENSIONS, find_videos, load_labels
from ca2vdm.evaluation.metrics import (
    color_histogram,
    foreground_fraction,
    histogram_distance,
    histogram_distances,
    motion,
    nearest_histogram_distance,
    ratio,
    shape_descriptor,
    sharpness,
    to_frames,
)
from ca2vdm.evaluation.seams import seam, seam_ratio
from ca2vdm.io.video import read_video

METRICS = ("sharpness", "motion", "fg", "brightness", "contrast")
ROW_KEY = {"motion": "motion_abs"}  # where a row holds a metric's absolute value (its "motion" is the ratio)
START = 10  # chunks that define how a video starts (its colour and class)


def chunk_bounds(num_frames: int, first_frames: int, chunk_frames: int) -> list[tuple[str, int, int]]:
    """(name, start, end) of the given first frame(s) ("first") and of each chunk after them ("0", "1", ...): the
    chunks of a :class:`ChunkLayout` without a first-frame chunk over the frames after the first; a last partial
    chunk is kept."""
    first = min(first_frames, num_frames)
    bounds = [("first", 0, first)] if first_frames else []
    spans = ChunkLayout(chunk_frames, first_frame_chunk=False).spans(0, num_frames - first)
    return bounds + [(str(i), first + start, first + stop) for i, (start, stop) in enumerate(spans)]


def raw_metrics(video: torch.Tensor) -> dict:
    """Metrics of one (3, T, H, W) chunk in [-1, 1]; ``histogram`` is its (3, bins) colour histogram, ``shape`` its
    (fill, aspect) descriptor."""
    pixels = to_frames(video)
    return {"histogram": color_histogram(video), "sharpness": sharpness(video), "motion": motion(video),
            "fg": foreground_fraction(video), "brightness": pixels.mean().item(), "contrast": pixels.std().item(),
            "shape": shape_descriptor(video)}


class ShapeBank:
    """Shape descriptors of labelled training chunks; a chunk's class is the label of the nearest one."""

    def __init__(self, shapes: np.ndarray, labels: np.ndarray, owner: np.ndarray):
        keep = ~np.isnan(shapes).any(axis=1)
        self.shapes, self.labels, self.owner = shapes[keep], labels[keep], owner[keep]  # (N, 2), (N,), (N,)
        self.points = self._scaled(self.shapes)  # (N, 2)

    @staticmethod
    def _scaled(shape: np.ndarray) -> np.ndarray:
        """(fill, aspect) -> (fill, log aspect): a wide and a tall box equally far from a square one."""
        return np.stack([shape[..., 0], np.log(shape[..., 1])], axis=-1)

    def classify(self, shape: np.ndarray, exclude_owner: int = -1) -> int | None:
        """Label of the nearest training chunk (in fill and log aspect), or None without a shape."""
        others = self.owner != exclude_owner
        if np.isnan(shape).any() or not others.any():
            return None
        distance = np.linalg.norm(self.points[others] - self._scaled(shape), axis=1)
        return int(self.labels[others][distance.argmin()])

    def accuracy(self) -> float:
        """Leave-one-video-out accuracy of :meth:`classify` on the bank itself (how far its classes can be trusted)."""
        hits = [self.classify(s, o) == y for s, y, o in zip(self.shapes, self.labels, self.owner)]
        return float(np.mean(hits)) if hits else math.nan


@dataclass
class TrainingChunks:
    """The training chunks a generated chunk is compared with."""
    histograms: np.ndarray      # (N, 3, bins) colour histograms
    sharpness: np.ndarray       # (N,)
    shapes: ShapeBank | None    # None without a labels manifest

    def colour_matched_sharpness(self, histogram: np.ndarray, count: int = 20) -> float:
        """Mean sharpness of the ``count`` training chunks nearest in colour (a dark shape has softer edges)."""
        distance = histogram_distances(histogram, self.histograms)  # (N,)
        return float(self.sharpness[np.argsort(distance)[:count]].mean())


def reference(data: Path, size: int, chunk_frames: int, samples: int,
              exclude: Path) -> tuple[TrainingChunks, dict]:
    """All chunks of ``samples`` training videos (evenly spaced, ``exclude`` left out) and the reference row:
    per-chunk metrics averaged over those chunks (``nn``: to the nearest chunk of another video; ``spread``: 5th and
    95th percentile of the per-video means, how much training videos differ among themselves)."""
    if not data.is_dir():
        raise ValueError(f"training data folder {data} not found; make it with `ca2vdm make-data --out {data}` or "
                         "pass --data")
    videos = [v for v in find_videos(data, VIDEO_EXTENSIONS) if v.resolve() != exclude.resolve()]
    if not videos:
        raise ValueError(f"no videos under {data}; make them with `ca2vdm make-data --out {data}`")
    picked = list(dict.fromkeys(videos[i] for i in np.linspace(0, len(videos) - 1, min(samples, len(videos)))
                                .round().astype(int)))
    manifest = data / DEFAULT_MANIFEST
    labels = load_labels(manifest) if manifest.is_file() else None
    chunks, owner, chunk_labels = [], [], []
    for index, path in enumerate(picked):
        video = read_video(path, size=size)  # (3, T, H, W)
        for _, start, end in chunk_bounds(video.shape[1], 0, chunk_frames):
            chunks.append({**raw_metrics(video[:, start:end]), "seam": seam(video, start)})
            owner.append(index)
            chunk_labels.append(labels.get(path.relative_to(data).as_posix(), -1) if labels else -1)
    bank, owner = np.stack([c["histogram"] for c in chunks]), np.array(owner)  # (N, 3, bins), (N,)
    shapes = ShapeBank(np.stack([c["shape"] for c in chunks]), np.array(chunk_labels), owner) if labels else None
    mean_hist = bank.mean(axis=0)
    ref = {key: float(np.nanmean([c[key] for c in chunks])) for key in METRICS}
    for key in METRICS:
        per_video = [np.nanmean([c[key] for c, o in zip(chunks, owner) if o == i]) for i in range(len(picked))]
        ref[f"{key}_spread"] = [float(v) / ref[key] for v in np.percentile(per_video, [5, 95])]
    ref["class_accuracy"] = shapes.accuracy() if shapes else None
    ref["seam"] = seam_ratio([c["seam"] for c in chunks], [c["motion"] for c in chunks])
    later = [d for i in range(len(picked)) for d in from_start(bank[owner == i])[START:]]
    ref["hist_start"] = float(np.mean(later)) if later else math.nan  # how much a training video's colour changes
    ref["hist"] = float(np.mean([histogram_distance(h, mean_hist) for h in bank]))
    ref["nn"] = (float(np.mean([nearest_histogram_distance(h, bank[owner != o]) for h, o in zip(bank, owner)]))
                 if len(picked) > 1 else math.nan)
    ref.update(videos=len(picked), chunks=len(chunks))
    return TrainingChunks(bank, np.array([c["sharpness"] for c in chunks]), shapes), ref


def from_start(histograms: np.ndarray) -> list[float]:
    """Colour-histogram distance of each of (N, 3, bins) chunks to the mean of the first START chunks (the colour it
    started with)."""
    start = histograms[:START].mean(axis=0)
    return [histogram_distance(h, start) for h in histograms]


def evaluate(video: torch.Tensor, training: TrainingChunks, ref: dict, first_frames: int,
             chunk_frames: int) -> list[dict]:
    """One row per chunk of a (3, T, H, W) video: histogram distances to the training chunks and to the video's first
    chunks (``hist_start``), metric ratios to ``ref`` (``sharp_colour``: to training chunks of its colour), foreground
    share, seam, class."""
    bank, shapes = training.histograms, training.shapes
    mean_hist, rows, histograms = bank.mean(axis=0), [], []
    for name, start, end in chunk_bounds(video.shape[1], first_frames, chunk_frames):
        m = raw_metrics(video[:, start:end])
        m["seam"] = seam(video, start)
        histograms.append(m["histogram"])
        rows.append({"chunk": name, "frames": [start, end], "hist": histogram_distance(m["histogram"], mean_hist),
                     "nn": nearest_histogram_distance(m["histogram"], bank),
                     "sharpness": m["sharpness"], "sharp": m["sharpness"] / ref["sharpness"],
                     "sharp_colour": m["sharpness"] / training.colour_matched_sharpness(m["histogram"]),
                     "motion_abs": m["motion"], "motion": m["motion"] / ref["motion"], "fg": m["fg"],
                     "brightness": m["brightness"], "bright": m["brightness"] / ref["brightness"],
                     "contrast": m["contrast"], "contr": m["contrast"] / ref["contrast"],
                     "seam_abs": m["seam"], "seam": ratio(m["seam"], m["motion"]),
                     "class": shapes.classify(m["shape"]) if shapes else None})
    generated = int(bool(first_frames))  # the given first frames are not a generated chunk
    for row, distance in zip(rows[generated:], from_start(np.stack(histograms[generated:]))):
        row["hist_start"] = distance
    return rows
