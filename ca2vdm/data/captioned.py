"""Captioned synthetic shapes: one shape drifting in one direction, described by its colour, shape, size, direction
and speed ("a small blue triangle drifting left slowly"), for text-conditioned models.

The frame is a torus (the shape leaves one side and enters on the other), so "drifting left" stays true however long
the video. Some colour-shape pairs (:data:`HELD_OUT`) never appear in the data: a prompt naming one tests whether
the model composes a colour and a shape it saw only apart (``ca2vdm eval prompts``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from ca2vdm.data.synthetic import PALETTE, SHAPES, draw_frames, start_dataset
from ca2vdm.io.video import VideoWriter

COLOURS = {"red": 0, "green": 1, "blue": 2, "yellow": 3, "magenta": 4, "cyan": 5}  # name -> row of PALETTE
SIZES = {"small": (0.14, 0.18), "large": (0.22, 0.26)}  # radius, relative to the frame
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPEEDS = {"slowly": (0.3, 0.6), "quickly": (0.9, 1.4)}  # pixels per frame at size 32 (scaled with the size)
HELD_OUT = (("red", "square"), ("green", "triangle"), ("blue", "circle"))  # colour-shape pairs never in the data
CAPTIONS_NAME = "captions.jsonl"
HELD_OUT_NAME = "held_out.json"
FULL_CAPTIONS = 0.75  # share of captions naming the size (and, apart, the motion): short prompts are in the data too


@dataclass(frozen=True)
class Attributes:
    """What a captioned video shows."""
    colour: str
    shape: str
    size: str
    direction: str
    speed: str

    def caption(self, size: bool = True, motion: bool = True) -> str:
        """"a [small] blue triangle [drifting left slowly]": colour and shape always, size and motion if asked."""
        words = ["a", self.size if size else "", self.colour, self.shape,
                 f"drifting {self.direction} {self.speed}" if motion else ""]
        return " ".join(w for w in words if w)


def pairs(held_out: bool) -> list[tuple[str, str]]:
    """The colour-shape pairs in the data (``held_out=False``) or held out of it, in a fixed order."""
    return [(c, s) for s in SHAPES for c in COLOURS if ((c, s) in HELD_OUT) == held_out]


def draw_attributes(rng: np.random.Generator, colour: str, shape: str) -> Attributes:
    """Size, direction and speed drawn at random for a colour-shape pair."""
    pick = lambda table: list(table)[rng.integers(len(table))]  # noqa: E731
    return Attributes(colour, shape, pick(SIZES), pick(DIRECTIONS), pick(SPEEDS))


def render_captioned_video(rng: np.random.Generator, attributes: Attributes, num_frames: int,
                           size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 frames showing ``attributes``; position, exact radius and speed from ``rng``."""
    radius = rng.uniform(*SIZES[attributes.size]) * size
    speed = rng.uniform(*SPEEDS[attributes.speed]) * size / 32
    dx, dy = DIRECTIONS[attributes.direction]
    start = rng.uniform(0, size, size=2)
    background = rng.uniform(0, 30, size=3).astype(np.float32)
    steps = np.arange(num_frames)
    xs, ys = start[0] + dx * speed * steps, start[1] + dy * speed * steps  # (T,) each
    return draw_frames(attributes.shape, xs, ys, radius, PALETTE[COLOURS[attributes.colour]], background, size,
                       wrap=True)


def write_captioned_dataset(out: str | os.PathLike, num_videos: int, num_frames: int, size: int, seed: int,
                            fps: int = 8, overwrite: bool = False) -> int:
    """Write ``num_videos`` mp4 files, ``captions.jsonl`` ({"file", "caption"} and the attributes) and
    ``held_out.json`` (the pairs left out, with a caption each) into ``out`` (see
    :func:`~ca2vdm.data.synthetic.start_dataset`). Video i shows the i-th training pair
    (cycling, so pairs are balanced) drawn from ``np.random.default_rng([seed, i])``; its caption names the size and
    the motion each with probability ``FULL_CAPTIONS``."""
    if num_videos <= 0:
        raise ValueError(f"num_videos must be positive, got {num_videos}")
    out = start_dataset(out, overwrite)  # a new or empty folder, or an earlier dataset replaced with overwrite
    records, train_pairs = [], pairs(held_out=False)
    for index in range(num_videos):
        rng = np.random.default_rng([seed, index])
        attributes = draw_attributes(rng, *train_pairs[index % len(train_pairs)])
        name = f"video_{index:05d}.mp4"
        with VideoWriter(out / name, fps=fps, overwrite=True) as writer:
            writer.write(render_captioned_video(rng, attributes, num_frames, size))
        caption = attributes.caption(size=rng.random() < FULL_CAPTIONS, motion=rng.random() < FULL_CAPTIONS)
        records.append({"file": name, "caption": caption, **asdict(attributes)})
    (out / CAPTIONS_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))
    held = [{"colour": c, "shape": s, "caption": f"a {c} {s}"} for c, s in pairs(held_out=True)]
    (out / HELD_OUT_NAME).write_text(json.dumps(held, indent=1) + "\n")
    return num_videos
