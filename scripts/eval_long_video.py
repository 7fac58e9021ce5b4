"""Measure drift, chunk by chunk, of a generated long video against the training data.

    python scripts/eval_long_video.py outputs/long_video.mp4 --data data/shapes --json outputs/eval.json

Columns: hist = colour-histogram distance to the training data's mean histogram (0 same, 1 disjoint), nn = to
the nearest training chunk's histogram (a colour seen in training: near the `train` row; every training video has
one colour, so `hist` is large even for training data);
sharp, motion = sharpness and mean frame-to-frame change relative to the training data (1 = as in training,
motion 0 = frozen); fg = fraction of pixels clearly brighter than the background (the shape is still there).
The `train` row holds the same metrics averaged over chunks of a sample of training videos.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from ca2vdm.data import VIDEO_EXTENSIONS, find_videos  # noqa: E402
from ca2vdm.metrics import (color_histogram, foreground_fraction, histogram_distance, motion,  # noqa: E402
                            nearest_histogram_distance, sharpness)
from ca2vdm.video_io import read_video  # noqa: E402


def chunk_bounds(num_frames: int, first_frames: int, chunk_frames: int) -> list[tuple[str, int, int]]:
    """(name, start, end) of the first frame(s) and of each chunk; a last partial chunk is kept."""
    bounds = [("first", 0, min(first_frames, num_frames))] if first_frames else []
    starts = range(first_frames, num_frames, chunk_frames)
    return bounds + [(str(i), s, min(s + chunk_frames, num_frames)) for i, s in enumerate(starts)]


def raw_metrics(video: torch.Tensor) -> dict:
    """Metrics of one (3, T, H, W) chunk in [-1, 1]; ``histogram`` is its (3, bins) colour histogram."""
    return {"histogram": color_histogram(video), "sharpness": sharpness(video), "motion": motion(video),
            "fg": foreground_fraction(video)}


def reference(data: Path, size: int, chunk_frames: int, samples: int, exclude: Path) -> tuple[np.ndarray, dict]:
    """Colour histograms (N, 3, bins) of all chunks of ``samples`` training videos (evenly spaced, ``exclude``
    left out), and the reference row: per-chunk metrics averaged over those chunks (``nn``: to the nearest chunk of
    another video)."""
    if not data.is_dir():
        raise ValueError(f"training data folder {data} not found; make it with "
                         f"`python scripts/make_synthetic_videos.py --out {data}` or pass --data")
    videos = [v for v in find_videos(data, VIDEO_EXTENSIONS) if v.resolve() != exclude.resolve()]
    if not videos:
        raise ValueError(f"no videos under {data}; make them with "
                         f"`python scripts/make_synthetic_videos.py --out {data}`")
    picked = list(dict.fromkeys(videos[i] for i in np.linspace(0, len(videos) - 1, min(samples, len(videos)))
                                .round().astype(int)))
    chunks, owner = [], []
    for index, path in enumerate(picked):
        video = read_video(path, size=size)
        for _, start, end in chunk_bounds(video.shape[1], 0, chunk_frames):
            chunks.append(raw_metrics(video[:, start:end]))
            owner.append(index)
    bank, owner = np.stack([c["histogram"] for c in chunks]), np.array(owner)
    mean_hist = bank.mean(axis=0)
    ref = {key: float(np.nanmean([c[key] for c in chunks])) for key in ("sharpness", "motion", "fg")}
    ref["hist"] = float(np.mean([histogram_distance(h, mean_hist) for h in bank]))
    ref["nn"] = (float(np.mean([nearest_histogram_distance(h, bank[owner != o]) for h, o in zip(bank, owner)]))
                 if len(picked) > 1 else math.nan)
    ref.update(videos=len(picked), chunks=len(chunks))
    return bank, ref


def evaluate(video: torch.Tensor, bank: np.ndarray, ref: dict, first_frames: int, chunk_frames: int) -> list[dict]:
    """One row per chunk: histogram distances to ``bank``, sharpness and motion ratios to ``ref``, foreground."""
    mean_hist, rows = bank.mean(axis=0), []
    for name, start, end in chunk_bounds(video.shape[1], first_frames, chunk_frames):
        m = raw_metrics(video[:, start:end])
        rows.append({"chunk": name, "frames": [start, end], "hist": histogram_distance(m["histogram"], mean_hist),
                     "nn": nearest_histogram_distance(m["histogram"], bank),
                     "sharpness": m["sharpness"], "sharp": m["sharpness"] / ref["sharpness"],
                     "motion_abs": m["motion"], "motion": m["motion"] / ref["motion"], "fg": m["fg"]})
    return rows


def format_table(rows: list[dict], ref: dict, chunk_frames: int) -> str:
    """The reference row, then one row per chunk (frame spans inclusive)."""
    def line(name: str, frames: str, values: list[float]) -> str:
        return f"{name:>6} {frames:>9} " + " ".join("     -" if math.isnan(v) else f"{v:6.3f}" for v in values)

    lines = [f"{'chunk':>6} {'frames':>9} " + " ".join(f"{c:>6}" for c in ("hist", "nn", "sharp", "motion", "fg")),
             line("train", str(chunk_frames), [ref["hist"], ref["nn"], 1.0, 1.0, ref["fg"]])]
    lines += [line(r["chunk"], f"{r['frames'][0]}-{r['frames'][1] - 1}",
                   [r["hist"], r["nn"], r["sharp"], r["motion"], r["fg"]]) for r in rows]
    return "\n".join(lines)


def _nan_to_none(row: dict) -> dict:
    """JSON has no NaN: undefined values (motion of a single frame) become null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="generated mp4")
    p.add_argument("--data", type=Path, default=Path("data/shapes"), help="training videos (default data/shapes)")
    p.add_argument("--chunk-frames", type=int, default=4, help="frames per generated chunk (demo model: 4)")
    p.add_argument("--first-frames", type=int, default=1, help="frames before the first chunk (default 1)")
    p.add_argument("--samples", type=int, default=30, help="training videos in the reference (default 30)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the reference to this file")
    args = p.parse_args(argv)
    if args.chunk_frames < 1 or args.first_frames < 0 or args.samples < 1:
        p.error("--chunk-frames and --samples must be >= 1 and --first-frames >= 0")
    try:
        video = read_video(args.video)  # (3, T, H, W)
        bank, ref = reference(args.data, min(video.shape[-2:]), args.chunk_frames, args.samples, args.video)
    except ValueError as e:
        sys.exit(f"error: {e}")
    rows = evaluate(video, bank, ref, args.first_frames, args.chunk_frames)
    print(f"{args.video}: {video.shape[1]} frames; reference: {ref['chunks']} chunks of {ref['videos']} videos "
          f"under {args.data} (sharpness {ref['sharpness']:.4f}, motion {ref['motion']:.4f} per pixel)")
    print(format_table(rows, ref, args.chunk_frames))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"video": str(args.video), "data": str(args.data), "reference": _nan_to_none(ref),
                  "chunks": [_nan_to_none(r) for r in rows]}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
