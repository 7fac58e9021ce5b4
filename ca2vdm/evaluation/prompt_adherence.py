"""Reading a generated video's colour and shape back, to check that it follows its prompt (``ca2vdm eval prompts``).

Colour: the mean colour of the foreground pixels (:func:`~ca2vdm.evaluation.metrics.foreground_colour`), named by the
nearest colour of the captioned shapes' palette. Shape: a nearest-centroid classifier over two features of the
foreground of each frame (the fill of its bounding box: disc ~0.79, square ~1, triangle ~0.5; and the box's aspect),
fitted on rendered captioned videos (:mod:`ca2vdm.data.captioned`). Frames are tori there (a shape leaving one side
enters on the other), so each mask is first rolled to put an empty row and column at its edges: a shape split across
a border is whole again. :func:`adherence` generates videos from prompts and reads them back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ca2vdm.data.captioned import COLOURS, draw_attributes, pairs, render_captioned_video
from ca2vdm.data.synthetic import PALETTE, SHAPES
from ca2vdm.evaluation.metrics import foreground_colour, foreground_mask, to_frames
from ca2vdm.generation.api import Pipeline, to_pixels

MIN_PIXELS = 4  # a frame whose foreground is smaller shows no shape


def _rolled(mask: np.ndarray) -> np.ndarray | None:
    """(H, W) bool mask rolled so that an empty row and column lie at its edges; None if no row or column is empty."""
    rows, cols = mask.any(axis=1), mask.any(axis=0)
    if rows.all() or cols.all():
        return None
    return np.roll(np.roll(mask, -int(np.argmin(rows)), axis=0), -int(np.argmin(cols)), axis=1)


def shape_features(video, margin: float = 0.25) -> np.ndarray:
    """(fill, aspect) of the foreground averaged over the frames that show a shape; NaN where none does."""
    features = []
    for mask in foreground_mask(to_frames(video), margin).numpy():
        mask = _rolled(mask)
        if mask is None or mask.sum() < MIN_PIXELS:
            continue
        ys, xs = np.nonzero(mask)
        height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        features.append((len(ys) / (height * width), width / height))
    return np.mean(features, axis=0) if features else np.full(2, math.nan)


def colour_name(video) -> str | None:
    """The palette colour nearest to the foreground's mean colour; None if there is no foreground."""
    mean = foreground_colour(video)
    if np.isnan(mean).any():
        return None
    palette = PALETTE[list(COLOURS.values())] / 255  # (colours, 3)
    return list(COLOURS)[int(np.argmin(((palette - mean) ** 2).sum(axis=1)))]


@dataclass
class ShapeReader:
    """Nearest-centroid shape classifier over :func:`shape_features`, features scaled by their spread within a
    shape."""
    centroids: np.ndarray  # (shapes, 2)
    scale: np.ndarray      # (2,)

    @classmethod
    def fit(cls, videos_per_shape: int = 24, frames: int = 8, size: int = 32, seed: int = 0) -> ShapeReader:
        """Fitted on rendered captioned videos (every colour, size, direction and speed)."""
        rng = np.random.default_rng(seed)
        features = {shape: [] for shape in SHAPES}
        for shape in SHAPES:
            for i in range(videos_per_shape):
                colour = list(COLOURS)[i % len(COLOURS)]
                video = render_captioned_video(rng, draw_attributes(rng, colour, shape), frames, size)
                features[shape].append(shape_features(video))
        table = np.array([np.nanmean(features[s], axis=0) for s in SHAPES])
        spread = np.sqrt(np.nanmean([np.nanvar(features[s], axis=0) for s in SHAPES], axis=0))  # within a shape
        return cls(table, spread)

    def __call__(self, video) -> str | None:
        feature = shape_features(video)
        if np.isnan(feature).any():
            return None
        return SHAPES[int(np.argmin((((self.centroids - feature) / self.scale) ** 2).sum(axis=1)))]


def read_back(video, shapes: ShapeReader) -> tuple[str | None, str | None]:
    """(colour, shape) a video (or chunk) shows; None for what cannot be read (no shape visible)."""
    return colour_name(video), shapes(video)


def training_pairs() -> list[tuple[str, str]]:
    return pairs(held_out=False)


def held_out_pairs() -> list[tuple[str, str]]:
    return pairs(held_out=True)


def check_reader(shapes: ShapeReader, videos: int = 8, seed: int = 1) -> float:
    """Fraction of freshly rendered captioned videos (every pair, held out ones too) read back right: the
    yardstick's own accuracy."""
    rng, right, total = np.random.default_rng(seed), 0, 0
    for colour, shape in training_pairs() + held_out_pairs():
        for _ in range(videos):
            video = render_captioned_video(rng, draw_attributes(rng, colour, shape), 4, 32)
            right += read_back(torch.from_numpy(video), shapes) == (colour, shape)
            total += 1
    return right / total


def prompted_videos(pipe: Pipeline, prompts: list[str], chunks: int, seed: int,
                    switch: tuple[int, list[str], str] | None = None) -> np.ndarray:
    """(B, T, H, W, 3) uint8 videos of ``prompts`` (one per video, seeds seed..), ``chunks`` chunks after the first
    frame; ``switch`` = (chunk, new prompts, mode)."""
    lvp, frames = pipe.sampler, []
    state = lvp.start(batch=len(prompts), prompt=prompts, seed=[seed + i for i in range(len(prompts))])
    frames.append(lvp.next_chunk(state).frames)  # the first frame
    for index in range(chunks):
        if switch is not None and index == switch[0]:
            lvp.switch(state, prompt=switch[1], mode=switch[2])
        frames.append(lvp.next_chunk(state).frames)
    return to_pixels(pipe.codec, torch.cat(frames, dim=2))


def adherence(pipe: Pipeline, reader: ShapeReader, pairs: list[tuple[str, str]], videos: int, chunks: int,
              seed: int) -> tuple[float, list[dict]]:
    """The share of ``videos`` videos per colour-shape pair (captions drawn with its attributes) whose colour and
    shape, read over every frame but the first, match the prompt; and one row per video."""
    rng = np.random.default_rng(seed)
    attributes = [draw_attributes(rng, c, s) for c, s in pairs for _ in range(videos)]
    prompts = [a.caption(size=rng.random() < 0.75, motion=rng.random() < 0.75) for a in attributes]
    pixels = prompted_videos(pipe, prompts, chunks, seed)
    rows = []
    for a, prompt, video in zip(attributes, prompts, pixels):
        colour, shape = read_back(torch.from_numpy(video[1:]), reader)
        rows.append({"prompt": prompt, "colour": colour, "shape": shape, "match": (colour, shape) == (a.colour,
                                                                                                      a.shape)})
    return sum(r["match"] for r in rows) / len(rows), rows
