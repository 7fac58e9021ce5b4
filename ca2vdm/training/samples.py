"""The periodic samples of a run (``train.sample_every``): one writer for every trainer's task.

A task's ``sample`` makes what it shows (the video DiT: a short video from its EMA weights; the distilled student: a
video of the EMA student; a LoRA run: its task's sample with the adapter folded in) and hands the frames to
:func:`write_sample`, which writes them where every run keeps them: ``out/samples/step_NNNNNN.mp4`` at
:data:`SAMPLE_FPS`, replacing a sample of the same step (a resumed run redoes the steps after its checkpoint).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ca2vdm.io.video_writer import VideoWriter

SAMPLE_FPS = 8


def sample_path(out: Path, step: int) -> Path:
    """Where the sample of ``step`` goes in the run folder ``out``."""
    return Path(out) / "samples" / f"step_{step:06d}.mp4"


def write_sample(frames: Iterable[np.ndarray], out: Path, step: int) -> Path:
    """Write ``frames`` (pieces of one video, each (T, H, W, 3) uint8, written as they come) as the sample of
    ``step``; returns its path."""
    path = sample_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps=SAMPLE_FPS, overwrite=True) as writer:
        for piece in frames:
            writer.write(piece)
    return path
