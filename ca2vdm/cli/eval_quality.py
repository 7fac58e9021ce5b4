"""Reference-free quality of a checkpoint's videos: the Frechet distance between generated and real clips in a
detector's feature space (FVD's formula), per chunk index and over all chunks, and the class accuracy.

    ca2vdm eval quality --checkpoint checkpoints/demo-4step.safetensors --videos 64 --chunks 8 \
        --json docs/results/quality_student.json
    ca2vdm eval quality --checkpoint checkpoints/demo.safetensors --videos 64 --chunks 8 --steps 4 --json ...
    ca2vdm eval quality ... --detector i3d_torchscript.pt --data data/shapes   # FVD's own network

The videos use the checkpoint's recorded sampler settings (``--steps`` and ``--cfg-scale`` override them); without
``--label`` video i has label i mod the classes (compared with all real clips), with it every video has that label
(compared with that class's real clips). The default detector (checkpoints/shapes-detector.safetensors, trained on
the synthetic shapes by ca2vdm train-detector) carries the real clips' statistics; any other needs ``--data``.
JSON: ``frechet_distance``, ``class_accuracy`` (a fraction in [0, 1]), ``per_chunk`` (one ``frechet_distance`` and
``class_accuracy`` per chunk index), without ``--label`` ``per_label`` (each class's videos against that class's
real clips), the settings and the generation's seconds per chunk
(ca2vdm/evaluation/quality.py).
"""
from __future__ import annotations

import argparse
import sys

from ca2vdm.cli.args import count, new_parser, number, seed
from ca2vdm.config import SamplerSettings
from ca2vdm.config.options import declared_fields
from ca2vdm.io.paths import DEFAULT_CHECKPOINT

DETECTOR = DEFAULT_CHECKPOINT.with_name("shapes-detector.safetensors")  # shipped beside the demo model
LIMIT = 100_000  # videos and chunks this evaluation makes at most


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    sampler = declared_fields(SamplerSettings)
    p = new_parser(__doc__, prog)
    p.add_input("--checkpoint", required=True, help="the video model (.safetensors or checkpoint directory)")
    p.add_argument("--videos", type=count(2, LIMIT), default=64, help=f"videos to generate, 2 .. {LIMIT}")
    p.add_argument("--chunks", type=count(1, LIMIT), default=8,
                   help=f"chunks per video (after the first frame), 1 .. {LIMIT}")
    p.add_argument("--label", type=count(0), default=None, help="one label for every video (default: cycle the "
                   "classes); one of the model's labels")
    p.add_argument("--seed", type=seed, default=0, help="video i uses seed + i; 0 .. 2**64 - 1")
    p.add_output("--json", required=True, help="where to write the figures")
    p.add_argument("--steps", type=number(sampler["steps"]), default=None,
                   help=f"override the checkpoint's denoising steps; {sampler['steps'].describe()}")
    p.add_argument("--cfg-scale", type=number(sampler["cfg_scale"]), default=None,
                   help=f"override the checkpoint's guidance scale; {sampler['cfg_scale'].describe()}")
    p.add_input("--detector", default=str(DETECTOR), help="our detector (.safetensors) or a TorchScript I3D file")
    p.add_input("--data", default=None, help="labelled video folder whose clips are the real ones (default: the "
                "statistics stored in our detector; required for any other)")
    p.add_argument("--threads", type=count(1, 1024), default=None, help="torch threads (default: torch's), 1 .. 1024")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    import torch  # after the arguments: --help answers before torch loads

    from ca2vdm.errors import Ca2vdmError
    from ca2vdm.evaluation.detector import load_detector
    from ca2vdm.evaluation.detector_training import real_clips, real_gaussians
    from ca2vdm.evaluation.quality import evaluate_quality
    from ca2vdm.generation.api import load_pipeline
    from ca2vdm.io.results import write_results

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        detector = load_detector(args.detector)
        real = None
        if args.data or not detector.real:
            if not args.data:
                sys.exit(f"error: detector {args.detector} holds no real statistics: pass --data with real videos")
            clips, labels, _ = real_clips(args.data, detector.frames or 4, detector.resolution or 32, 8)
            features = torch.cat([detector.features(part) for part in clips.split(64)])
            real = real_gaussians(features, labels)
        pipe = load_pipeline(args.checkpoint, "cpu", steps=args.steps, cfg_scale=args.cfg_scale)
        report = evaluate_quality(pipe, detector, args.videos, args.chunks, args.label, args.seed, real)
        report = {"checkpoint": args.checkpoint, **report}
        write_results(args.json, report, [args.checkpoint], "json")
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli({'num_chunks': '--chunks'})}")
    accuracy = "n/a" if report["class_accuracy"] is None else f"{report['class_accuracy']:.3f}"
    print(f"{args.checkpoint} ({report['sampler']['steps']} steps, cfg {report['sampler']['cfg_scale']}): Frechet "
          f"distance {report['frechet_distance']:.2f}, class accuracy {accuracy}; per chunk: "
          + " ".join(f"{row['frechet_distance']:.1f}" for row in report["per_chunk"]))
    for label, row in report.get("per_label", {}).items():
        distance = "n/a" if row["frechet_distance"] is None else f"{row['frechet_distance']:.2f}"
        print(f"  label {label} ({row['videos']} videos): Frechet distance {distance}, class accuracy "
              f"{row['class_accuracy']:.3f}")
