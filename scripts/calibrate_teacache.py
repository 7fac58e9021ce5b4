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

Arguments are checked before any sampling: counts must be at least 1, and the TeaCache polynomial's degree (1 to
``MAX_DEGREE``) needs at least ``PAIRS_PER_COEFFICIENT`` pairs per coefficient from the seeds and chunks asked for.
"""
import argparse
import json
import sys

import numpy as np
import torch

from ca2vdm.checkpoints.weights import load_model, update_metadata, weights_file
from ca2vdm.cli.args import positive_int
from ca2vdm.errors import Ca2vdmError
from ca2vdm.io.paths import check_writable_file
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import MagCacheRecorder, TeaCacheRecorder, fit_polynomial
from ca2vdm.sampling.step_cache.teacache import PAIRS_PER_COEFFICIENT

MAX_DEGREE = 8  # TeaCache fits degree 4; beyond this a polynomial of relative changes only chases noise


def degree(text: str) -> int:
    """argparse type of the polynomial's degree: 1 .. MAX_DEGREE."""
    value = int(text)
    if not 1 <= value <= MAX_DEGREE:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1 .. {MAX_DEGREE}, got {value}")
    return value


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


def check_pairs(args: argparse.Namespace, steps: int) -> None:
    """Refuse, before sampling, a TeaCache degree the asked-for samples cannot support: every chunk records at least
    steps - 1 pairs (the first step of a chunk has no change to compare)."""
    pairs, needed = args.seeds * args.chunks * (steps - 1), PAIRS_PER_COEFFICIENT * (args.degree + 1)
    if args.policy == "teacache" and pairs < needed:
        more = -(-needed // max(args.chunks * (steps - 1), 1))
        sys.exit(f"error: --degree {args.degree} needs at least {needed} (input, output change) pairs "
                 f"({PAIRS_PER_COEFFICIENT} per coefficient), but --seeds {args.seeds} --chunks {args.chunks} at "
                 f"{steps} steps record about {pairs}; pass --seeds {more} or more, or more --chunks"
                 + (", or a lower --degree" if args.degree > 1 else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="weights file or training checkpoint directory")
    p.add_argument("--policy", choices=["teacache", "magcache"], default="teacache", help="what to calibrate")
    p.add_argument("--seeds", type=positive_int, default=8, help="videos to sample (default 8)")
    p.add_argument("--chunks", type=positive_int, default=4, help="chunks per video (default 4)")
    p.add_argument("--degree", type=degree, default=4, help=f"TeaCache: degree of the polynomial, 1 .. {MAX_DEGREE} "
                                                            "(default 4)")
    p.add_argument("--dry-run", action="store_true", help="print the fit, do not write the checkpoint")
    args = p.parse_args()

    try:
        if not args.dry_run:
            check_writable_file(weights_file(args.checkpoint), "checkpoint")
        model, meta = load_model(args.checkpoint)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    check_pairs(args, meta.sampler.steps)
    recorder = TeaCacheRecorder() if args.policy == "teacache" else MagCacheRecorder()
    pipe = LongVideoPipeline.for_checkpoint(model, meta, policy=recorder)
    classes = model.cfg.num_classes
    for seed in range(args.seeds):
        label = seed % classes if classes else None
        for _ in pipe.generate(args.chunks, label=label, seed=seed):
            pass
    entries = teacache_entries(recorder, args.degree) if args.policy == "teacache" else magcache_entries(recorder)
    if not args.dry_run:
        print(f"stored in {update_metadata(args.checkpoint, entries)}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
