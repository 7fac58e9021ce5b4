"""Calibrate a step cache for a checkpoint and store the result in the checkpoint's metadata.

    python scripts/calibrate_teacache.py --checkpoint checkpoints/demo.safetensors                     # TeaCache
    python scripts/calibrate_teacache.py --checkpoint checkpoints/demo.safetensors --policy magcache   # MagCache

Runs full sampling (every step computed) for several seeds and labels. ``--policy teacache`` records at each step
the relative L1 change of the first block's modulated input and of the block stack's output, fits a 4th-order
polynomial (output change as a function of input change), prints the fit quality and writes the coefficients
(key ``teacache_coefficients``). ``--policy magcache`` records at each step the magnitude ratio of successive
block-stack residuals (MagCache's "magnitude law"), averages it per step over all chunks and writes the curve
(key ``magcache_ratios``, one value per denoising step of the checkpoint's sampler). Only the metadata of the
weights file changes; ``--step-cache teacache`` / ``magcache`` find it there.
"""
import argparse
import json

import numpy as np
import torch

from ca2vdm.checkpoints.weights import load_model, update_metadata
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import MagCacheRecorder, TeaCacheRecorder, fit_polynomial


def teacache_entries(recorder: TeaCacheRecorder, degree: int) -> dict:
    """Fit the rescaling polynomial; print the fit; the metadata entries to store."""
    coefficients, r2 = fit_polynomial(recorder.pairs, degree)
    x, y = np.array(recorder.pairs).T
    print(f"{len(recorder.pairs)} (input change, output change) pairs; input change {x.min():.4f}..{x.max():.4f}, "
          f"output change {y.min():.4f}..{y.max():.4f}")
    print(f"polynomial (highest power first): {json.dumps([round(c, 6) for c in coefficients])}; R^2 = {r2:.4f}")
    return {"teacache_coefficients": coefficients, "teacache_fit": {"r2": r2, "pairs": len(recorder.pairs)}}


def magcache_entries(recorder: MagCacheRecorder) -> dict:
    """The per-step magnitude ratio curve; print it; the metadata entries to store."""
    means, stds = recorder.curve()
    samples = min(len(v) for v in recorder.samples.values())
    print(f"magnitude ratio per step ({len(means)} steps, >= {samples} chunks each):")
    print("  mean " + " ".join(f"{m:.4f}" for m in means))
    print("  std  " + " ".join(f"{s:.4f}" for s in stds))
    return {"magcache_ratios": means, "magcache_fit": {"steps": len(means), "chunks": samples, "std": stds}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="weights file or training checkpoint directory")
    p.add_argument("--policy", choices=["teacache", "magcache"], default="teacache", help="what to calibrate")
    p.add_argument("--seeds", type=int, default=8, help="videos to sample")
    p.add_argument("--chunks", type=int, default=4, help="chunks per video")
    p.add_argument("--degree", type=int, default=4, help="TeaCache: degree of the polynomial")
    p.add_argument("--dry-run", action="store_true", help="print the fit, do not write the checkpoint")
    args = p.parse_args()

    model, meta = load_model(args.checkpoint)
    recorder = TeaCacheRecorder() if args.policy == "teacache" else MagCacheRecorder()
    pipe = LongVideoPipeline.for_checkpoint(model, meta, step_cache=recorder)
    classes = model.cfg.num_classes
    for seed in range(args.seeds):
        label = seed % classes if classes else None
        for _ in pipe.generate(args.chunks, label=label, seed=seed):
            pass
    entries = teacache_entries(recorder, args.degree) if args.policy == "teacache" else magcache_entries(recorder)
    if not args.dry_run:
        print(f"stored in {update_metadata(args.checkpoint, entries)}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
