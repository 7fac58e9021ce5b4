"""Train the small video feature network behind ``ca2vdm eval quality`` on a labelled video folder (the synthetic
shapes), and write it with the real clips' feature Gaussians (a few hundred KB).

    ca2vdm make-data --out data/shapes
    ca2vdm train-detector --data data/shapes --out checkpoints/shapes-detector.safetensors

Clips of one chunk (4 frames, 32x32); every 8th video is held out for the reported class accuracy. A few minutes on
one CPU core (docs/distillation.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from ca2vdm.cli.args import count, new_parser, seed
from ca2vdm.errors import Ca2vdmError


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("--data", default="data/shapes", help="labelled video folder (labels.jsonl)")
    p.add_output("--out", default="checkpoints/shapes-detector.safetensors", help="detector file to write")
    p.add_argument("--steps", type=count(1, 10 ** 7), default=600, help="training steps, 1 .. 10**7")
    p.add_argument("--batch", type=count(1, 4096), default=64, help="clips per step, 1 .. 4096")
    p.add_argument("--clips-per-video", type=count(1, 10_000), default=16,
                   help="clips cut from each video, 1 .. 10000")
    p.add_argument("--seed", type=seed, default=0, help="clip positions, initialisation and batches; 0 .. 2**64 - 1")
    p.add_argument("--threads", type=count(1, 1024), default=None, help="torch threads (default: torch's), 1 .. 1024")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    import torch  # after the arguments: --help answers before torch loads

    from ca2vdm.evaluation.detector_training import train_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        info = train_detector(args.data, args.out, steps=args.steps, batch=args.batch,
                              clips_per_video=args.clips_per_video, seed=args.seed)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    print(json.dumps(info))
    print(f"wrote {args.out}: held-out class accuracy {info['held_out_accuracy']:.3f}")
