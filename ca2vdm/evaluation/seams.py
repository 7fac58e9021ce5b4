"""Seams between chunks: the change from one chunk's last frame to the next chunk's first, against the change from
frame to frame inside chunks.

A chunk that continues its context joins it as smoothly as two frames inside a chunk (a ratio near 1); a model that
ignores its context jumps at every seam (the long-video drift bar, :mod:`ca2vdm.evaluation.drift`), and a prompt
switch shows as one seam (:mod:`ca2vdm.evaluation.prompt_switches`). Both measure with :func:`seam` and
:func:`seam_ratio`. Changes are :func:`~ca2vdm.evaluation.metrics.motion`'s: mean absolute pixel change, pixels in
[0, 1], for videos in either convention ((T, H, W, 3) uint8 or (C, T, H, W) in [-1, 1]).
"""
from __future__ import annotations

import math

import numpy as np

from ca2vdm.evaluation.metrics import Video, motion, ratio, time_slice


def seam(video: Video, start: int) -> float:
    """Mean absolute change from frame ``start - 1`` to frame ``start`` of one video (NaN at 0: no frame before)."""
    return motion(time_slice(video, start - 1, start + 1)) if start > 0 else math.nan


def seam_ratio(seams: list[float], motions: list[float]) -> float:
    """Mean change across chunk seams / mean frame-to-frame change inside the same chunks: ``seams[i]`` is chunk i's
    seam before it, ``motions[i]`` the motion inside it; chunks without a seam (NaN: a video's first) are left out.
    NaN where the chunks do not move."""
    joined = [(s, m) for s, m in zip(seams, motions) if not math.isnan(s)]
    return ratio(float(np.nanmean([s for s, _ in joined])), float(np.nanmean([m for _, m in joined])))
