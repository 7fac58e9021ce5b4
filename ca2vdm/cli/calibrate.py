"""Calibrate a step cache for a checkpoint and store the result in the checkpoint's metadata.

    ca2vdm calibrate --checkpoint checkpoints/demo.safetensors                     # TeaCache
    ca2vdm calibrate --checkpoint checkpoints/demo.safetensors --policy magcache   # MagCache

Runs full sampling (every step computed) for several seeds and labels. ``--policy teacache`` records at each step
the relative L1 change of the first block's modulated input and of the block stack's output, fits a 4th-order
polynomial (output change as a function of input change), prints the fit quality and writes the coefficients
(key ``teacache_coefficients``). ``--policy magcache`` records at each step the magnitude ratio of successive
block-stack residuals (MagCache's "magnitude law"), averages it per step over all chunks and writes the curve
(key ``magcache_ratios``, one value per denoising step of the checkpoint's sampler). Only the metadata of the
weights file changes; ``--step-cache teacache`` / ``magcache`` find it there (ca2vdm/evaluation/calibration.py).

Arguments are checked before any sampling: counts must be at least 1, and the TeaCache polynomial's degree (1 to
``MAX_DEGREE``) needs at least 10 pairs per coefficient from the seeds and chunks asked for.
"""
from __future__ import annotations

import argparse
import sys

from ca2vdm.cli.args import count, new_parser, positive_int
from ca2vdm.errors import Ca2vdmError

POLICIES = ("teacache", "magcache")  # the step caches that need a calibration
MAX_DEGREE = 8  # TeaCache fits degree 4; beyond this a polynomial of relative changes only chases noise


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("--checkpoint", required=True, help="weights file or training checkpoint directory (its metadata is "
                "updated in place)")
    p.add_argument("--policy", choices=POLICIES, default="teacache", help="what to calibrate")
    p.add_argument("--seeds", type=positive_int, default=8, help="videos to sample (default 8)")
    p.add_argument("--chunks", type=positive_int, default=4, help="chunks per video (default 4)")
    p.add_argument("--degree", type=count(1, MAX_DEGREE), default=4,
                   help=f"TeaCache: degree of the polynomial, 1 .. {MAX_DEGREE} (default 4)")
    p.add_argument("--dry-run", action="store_true", help="print the fit, do not write the checkpoint")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    from ca2vdm.checkpoints.weights import load_model, update_metadata, weights_file  # after the arguments
    from ca2vdm.evaluation.calibration import calibration_entries, check_pairs, record
    from ca2vdm.io.paths import check_writable_file

    try:
        if not args.dry_run:
            check_writable_file(weights_file(args.checkpoint), "checkpoint")
        model, meta = load_model(args.checkpoint)
        check_pairs(args.policy, args.seeds, args.chunks, meta.sampler.steps, args.degree)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    recorder = record(model, meta, args.policy, args.seeds, args.chunks)
    entries, report = calibration_entries(recorder, args.degree)
    print(report)
    if not args.dry_run:
        print(f"stored in {update_metadata(args.checkpoint, entries)}")
