"""Synthetic "bouncing shapes" videos: one coloured shape moving at constant
velocity and bouncing off the borders, so motion continues indefinitely.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from einops import reduce

from ca2vdm.errors import SettingError, opt
from ca2vdm.io.paths import check_output_folder
from ca2vdm.io.video import VideoWriter

SHAPES = ("circle", "square", "triangle")  # class index = position
PALETTE = np.array(
    [
        (230, 40, 40),  # red
        (40, 200, 60),  # green
        (50, 90, 240),  # blue
        (240, 210, 30),  # yellow
        (220, 50, 220),  # magenta
        (30, 210, 220),  # cyan
        (250, 130, 20),  # orange
        (150, 60, 240),  # violet
    ],
    dtype=np.float32,
)
SUPERSAMPLE = 4
DATASET_FILES = ("labels.jsonl", "classes.json", "captions.jsonl", "held_out.json")  # written beside the videos
DATASET_VIDEO = re.compile(r"\.?video_\d{5,}(\.partial)?\.mp4")  # its videos (and a killed write's temporary file)
SQUARE_HALF_SIDE = 0.85  # relative to the radius, for similar visual size
TRIANGLE_CIRCUMRADIUS = 1.35
# Bounding box around the centre, relative to the radius: (half width, above, below).
_BOX = {
    "circle": (1.0, 1.0, 1.0),
    "square": (SQUARE_HALF_SIDE,) * 3,
    "triangle": (TRIANGLE_CIRCUMRADIUS * np.sqrt(3) / 2, TRIANGLE_CIRCUMRADIUS, TRIANGLE_CIRCUMRADIUS / 2),
}


def _bounce(start: float, velocity: float, low: float, high: float, steps: np.ndarray) -> np.ndarray:
    """Positions of a point moving at `velocity` reflected inside [low, high]."""
    span = high - low
    offset = np.mod(start - low + velocity * steps, 2 * span)
    return low + np.where(offset > span, 2 * span - offset, offset)


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of grid points (offsets dx, dy from the centre) inside the shape."""
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= SQUARE_HALF_SIDE * radius
    # Upward-pointing equilateral triangle: inside all three edge half-planes.
    inradius = TRIANGLE_CIRCUMRADIUS * radius / 2
    s = np.sqrt(3) / 2
    return (dy <= inradius) & (-s * dx - 0.5 * dy <= inradius) & (s * dx - 0.5 * dy <= inradius)


def render_shape_video(
    rng: np.random.Generator, num_frames: int, size: int, shape: str, colour: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Render one bouncing-shape video as (T, H, W, 3) uint8 with H = W = size.

    Radius is 18-25% of `size`, speed 0.5-1.5 px/frame at size 32 (scaled with
    size), colour from PALETTE (or `colour`, RGB: every other draw unchanged) on
    a near-black tinted background. Edges are anti-aliased by 4x supersampling.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    if num_frames <= 0 or size < 8:
        raise ValueError(f"need num_frames >= 1 and size >= 8, got {num_frames} and {size}")
    radius = rng.uniform(0.18, 0.25) * size
    half_width, above, below = (radius * k for k in _BOX[shape])
    speed = rng.uniform(0.5, 1.5) * size / 32
    angle = rng.uniform(0, 2 * np.pi)
    color = PALETTE[rng.integers(len(PALETTE))]
    if colour is not None:
        color = np.array(colour, dtype=np.float32)
    background = rng.uniform(0, 30, size=3).astype(np.float32)

    steps = np.arange(num_frames)
    x_low, x_high = half_width, size - half_width
    y_low, y_high = above, size - below
    xs = _bounce(rng.uniform(x_low, x_high), speed * np.cos(angle), x_low, x_high, steps)  # (T,)
    ys = _bounce(rng.uniform(y_low, y_high), speed * np.sin(angle), y_low, y_high, steps)  # (T,)
    return draw_frames(shape, xs, ys, radius, color, background, size)


def draw_frames(shape: str, xs: np.ndarray, ys: np.ndarray, radius: float, color: np.ndarray,
                background: np.ndarray, size: int, wrap: bool = False) -> np.ndarray:
    """(T, size, size, 3) uint8 frames of ``shape`` centred at (xs[t], ys[t]) pixels, anti-aliased by supersampling;
    with ``wrap`` the frame is a torus (a shape leaving one side enters on the other)."""
    fine = (np.arange(size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sample centres in pixel units
    grid_y, grid_x = np.meshgrid(fine, fine, indexing="ij")  # (H*s, W*s)
    video = np.empty((len(xs), size, size, 3), dtype=np.uint8)
    for t in range(len(xs)):
        dx, dy = grid_x - xs[t], grid_y - ys[t]
        if wrap:
            dx, dy = (np.mod(d + size / 2, size) - size / 2 for d in (dx, dy))
        mask = _coverage(shape, dx, dy, radius).astype(np.float32)
        alpha = reduce(mask, "(h a) (w b) -> h w 1", "mean", a=SUPERSAMPLE, b=SUPERSAMPLE)
        video[t] = np.round(background * (1 - alpha) + color * alpha).astype(np.uint8)
    return video


def write_dataset(
    out: str | os.PathLike, num_videos: int, num_frames: int, size: int, seed: int, fps: int = 8,
    colour: tuple[int, int, int] | None = None, overwrite: bool = False,
) -> int:
    """Write `num_videos` mp4 files plus labels.jsonl and classes.json into `out` (see :func:`start_dataset`).

    Classes cycle through SHAPES (balanced); video i is drawn from
    np.random.default_rng([seed, i]); `colour` paints every shape one RGB
    colour instead of PALETTE's. Returns the number of videos written.
    """
    if num_videos <= 0:
        raise ValueError(f"num_videos must be positive, got {num_videos}")
    out = start_dataset(out, overwrite)
    records = []
    for index in range(num_videos):
        label = index % len(SHAPES)
        frames = render_shape_video(np.random.default_rng([seed, index]), num_frames, size, SHAPES[label], colour)
        name = f"video_{index:05d}.mp4"
        with VideoWriter(out / name, fps=fps, overwrite=True) as writer:
            writer.write(frames)
        records.append({"file": name, "label": label, "shape": SHAPES[label]})
    (out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "classes.json").write_text(json.dumps(list(SHAPES)) + "\n")
    return num_videos


def start_dataset(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """``out`` ready for a synthetic dataset: a new or empty folder (created). A folder holding an earlier dataset of
    these writers (only their videos, manifests and temporary files) is emptied of it with ``overwrite``, so no video
    of the earlier one is left without its label or caption; anything else in it, a file or a device as ``out``:
    SettingError naming ``out``, before anything is written."""
    out = check_output_folder(out)
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise SettingError("out", out, f"already holds {len(held)} files (e.g. {held[0]}); pass {opt('overwrite')} "
                           "to replace a dataset written here before, or choose a new folder")
    others = [name for name in held if name not in DATASET_FILES and not DATASET_VIDEO.fullmatch(name)]
    if others:
        raise SettingError("out", out, f"holds files that are not a synthetic dataset's (e.g. {others[0]}); they are "
                           "never replaced: choose a new folder")
    for name in held:
        (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
