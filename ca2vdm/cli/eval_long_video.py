"""Measure drift, chunk by chunk, of a generated long video against the training data, and check the drift bar.

    ca2vdm eval long-video outputs/long_video.mp4 --data data/shapes --json outputs/eval.json

Columns: hist = colour-histogram distance to the training data's mean histogram (0 same, 1 disjoint), nn = to
the nearest training chunk's histogram (a colour seen in training: near the `train` row; every training video has
one colour, so `hist` is large even for training data);
sharp, motion = sharpness and mean frame-to-frame change relative to the training data (1 = as in training,
motion 0 = frozen); fg = fraction of pixels clearly brighter than the background (the shape is still there);
bright, contr = mean and standard deviation of the pixel values relative to the training data; seam = the change from
the previous chunk's last frame to this chunk's first, relative to the frame-to-frame change inside this chunk (1:
the chunks join as smoothly as frames inside a chunk; a model that ignores its context jumps at every seam); class =
the label of the training chunk whose shape (fill of its bounding box, aspect; ``metrics.shape_descriptor``) is
nearest.
The `train` row holds the same metrics averaged over chunks of a sample of training videos (ca2vdm/evaluation/drift.py).

Summary (issue 13's drift bar): the worst chunk after chunk 20 for every metric, relative to chunk 0 and to the
training data; the model goals (last 50 chunks: sharpness within 15 % of training chunks of the same colour (a dark
shape has softer edges), foreground within 15 % of the training data's, motion never below 0.1x training, the class
kept: the most frequent class of the first 10 chunks is the last 50's) and the video goals (last 50 chunks against
the first 10: brightness within 15 %, contrast and sharpness >= 0.85x, motion >= 0.5x), and beyond the issue's bar:
the shape never vanishes, the colour is kept, and the seams between chunks are at most 1.25x as large (relative to
the motion inside chunks) as at the same frames of training videos (ca2vdm/evaluation/drift_summary.py). Training
videos differ among themselves (colour, size): the summary prints their spread. With several videos, one comparison
line each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ca2vdm.cli.args import count, new_parser


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("videos", type=Path, nargs="+", help="generated mp4 files (several: one comparison line each)")
    p.add_input("--data", type=Path, default=Path("data/shapes"), help="training videos (default data/shapes)")
    p.add_argument("--chunk-frames", type=count(1, 10_000), default=4,
                   help="frames per generated chunk (demo model: 4), 1 .. 10000")
    p.add_argument("--first-frames", type=count(0, 10_000), default=1,
                   help="frames before the first chunk (default 1), 0 .. 10000")
    p.add_argument("--samples", type=count(1, 100_000), default=30,
                   help="training videos in the reference (default 30), 1 .. 100000")
    p.add_output("--json", type=Path, default=None, help="also write the rows, summary and reference to this file "
                 "(several videos: a list of their summaries and references)")
    p.add_argument("--summary-only", action="store_true", help="print the summary, not the per-chunk table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    from ca2vdm.evaluation.drift import evaluate, reference  # after the arguments: --help answers before torch loads
    from ca2vdm.evaluation.drift_summary import compare_line, format_summary, format_table, nan_to_none, summarize
    from ca2vdm.io.results import write_results
    from ca2vdm.io.video import read_video

    reports, lines = [], []
    for path in args.videos:
        try:
            video = read_video(path)  # (3, T, H, W)
            training, ref = reference(args.data, min(video.shape[-2:]), args.chunk_frames, args.samples, path)
        except ValueError as e:
            sys.exit(f"error: {e}")
        rows = evaluate(video, training, ref, args.first_frames, args.chunk_frames)
        print(f"{path}: {video.shape[1]} frames; reference: {ref['chunks']} chunks of {ref['videos']} videos "
              f"under {args.data} (sharpness {ref['sharpness']:.4f}, motion {ref['motion']:.4f} per pixel)")
        if not args.summary_only:
            print(format_table(rows, ref, args.chunk_frames))
        summary = summarize(rows, ref)
        print(format_summary(summary, ref))
        lines.append(compare_line(path.name, summary))
        report = {"video": str(path), "data": str(args.data), "reference": nan_to_none(ref), "summary": summary}
        reports.append(report if len(args.videos) > 1 else {**report, "chunks": [nan_to_none(r) for r in rows]})
    if len(args.videos) > 1:
        print("\n".join(["", "comparison (goals: the issue's eight; the numbers as in the summaries above)"] + lines))
    if args.json:
        write_results(args.json, reports[0] if len(reports) == 1 else reports, args.videos, "json")
