"""Calibrating a step cache for a checkpoint (``ca2vdm calibrate``): record every denoising step of full sampling,
fit what the policy needs, and the metadata entries that store it in the weights file.

TeaCache: the relative L1 change of the first block's modulated input and of the block stack's output at each step,
fitted by a polynomial (output change as a function of input change; entries ``teacache_coefficients``, highest power
first, and ``teacache_fit``). MagCache: the magnitude ratio of successive block-stack residuals (its "magnitude law"),
averaged per step over all chunks (entries ``magcache_ratios``, one value per denoising step, and ``magcache_fit``).
:func:`check_pairs` refuses, before any sampling, a polynomial the asked-for samples cannot support.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.errors import ConfigError, opt
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import MagCacheRecorder, TeaCacheRecorder, fit_polynomial
from ca2vdm.sampling.step_cache.teacache import PAIRS_PER_COEFFICIENT


def check_pairs(policy: str, seeds: int, chunks: int, steps: int, degree: int) -> None:
    """ConfigError unless ``seeds`` videos of ``chunks`` chunks at ``steps`` steps record enough (input, output
    change) pairs for TeaCache's degree-``degree`` polynomial: every chunk records at least steps - 1 pairs (the first
    step of a chunk has no change to compare)."""
    pairs, needed = seeds * chunks * (steps - 1), PAIRS_PER_COEFFICIENT * (degree + 1)
    if policy == "teacache" and pairs < needed:
        more = -(-needed // max(chunks * (steps - 1), 1))
        raise ConfigError(f"{opt('degree', degree)} needs at least {needed} (input, output change) pairs "
                          f"({PAIRS_PER_COEFFICIENT} per coefficient), but {opt('seeds', seeds)} "
                          f"{opt('chunks', chunks)} at {steps} steps record about {pairs}; pass {opt('seeds', more)} "
                          f"or more, or more {opt('chunks')}" + (f", or a lower {opt('degree')}" if degree > 1 else ""))


@torch.no_grad()
def record(model: torch.nn.Module, meta: CheckpointMetadata, policy: str, seeds: int,
           chunks: int) -> TeaCacheRecorder | MagCacheRecorder:
    """Sample ``seeds`` videos of ``chunks`` chunks (seed i with label i mod the classes) computing every step, with
    the recorder of ``policy`` attached; the recorder."""
    recorder = TeaCacheRecorder() if policy == "teacache" else MagCacheRecorder()
    pipe = LongVideoPipeline.for_checkpoint(model, meta, policy=recorder)
    classes = model.cfg.num_classes
    for seed in range(seeds):
        label = seed % classes if classes else None
        for _ in pipe.generate(chunks, label=label, seed=seed):
            pass
    return recorder


def teacache_entries(recorder: TeaCacheRecorder, degree: int) -> tuple[dict, str]:
    """The rescaling polynomial fitted to the recorded pairs: (the metadata entries to store, a report of the fit)."""
    coefficients, r2 = fit_polynomial(recorder.pairs, degree)
    x, y = np.array(recorder.pairs).T  # (pairs,) input changes, output changes
    report = (f"{len(recorder.pairs)} (input change, output change) pairs; input change {x.min():.4f}..{x.max():.4f}, "
              f"output change {y.min():.4f}..{y.max():.4f}\n"
              f"polynomial (highest power first): {json.dumps([round(c, 6) for c in coefficients])}; R^2 = {r2:.4f}")
    return {"teacache_coefficients": coefficients, "teacache_fit": {"r2": r2, "pairs": len(recorder.pairs)}}, report


def magcache_entries(recorder: MagCacheRecorder) -> tuple[dict, str]:
    """The per-step magnitude ratio curve: (the metadata entries to store, a report of the curve)."""
    means, stds = recorder.curve()
    samples = min(len(v) for v in recorder.samples.values())
    report = (f"magnitude ratio per step ({len(means)} steps, >= {samples} chunks each):\n"
              "  mean " + " ".join(f"{m:.4f}" for m in means) + "\n"
              "  std  " + " ".join(f"{s:.4f}" for s in stds))
    return {"magcache_ratios": means, "magcache_fit": {"steps": len(means), "chunks": samples, "std": stds}}, report


def calibration_entries(recorder: TeaCacheRecorder | MagCacheRecorder, degree: int) -> tuple[dict, str]:
    """The entries (and report) of whichever recorder ran."""
    if isinstance(recorder, TeaCacheRecorder):
        return teacache_entries(recorder, degree)
    return magcache_entries(recorder)
