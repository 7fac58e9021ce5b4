"""Measure drift, chunk by chunk, of a generated long video against the training data, and check the drift bar.

    python scripts/eval_long_video.py outputs/long_video.mp4 --data data/shapes --json outputs/eval.json

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
The `train` row holds the same metrics averaged over chunks of a sample of training videos.

Summary (issue 13's drift bar): the worst chunk after chunk 20 for every metric, relative to chunk 0 and to the
training data; the model goals (last 50 chunks: sharpness within 15 % of training chunks of the same colour (a dark
shape has softer edges), foreground within 15 % of the training data's, motion never below 0.1x training, the class
kept: the most frequent class of the first 10 chunks is the last 50's) and the video goals (last 50 chunks against
the first 10: brightness within 15 %, contrast and sharpness >= 0.85x, motion >= 0.5x), and beyond the issue's bar:
the shape never vanishes, the colour is kept, and the seams between chunks are at most 1.25x as large (relative to
the motion inside chunks) as at the same frames of training videos. Training videos differ among themselves
(colour, size): the summary prints their spread. With several videos, one comparison line each.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ca2vdm.data.clips import DEFAULT_MANIFEST, VIDEO_EXTENSIONS, find_videos, load_labels
from ca2vdm.evaluation.metrics import (
    color_histogram,
    foreground_fraction,
    histogram_distance,
    histogram_distances,
    motion,
    nearest_histogram_distance,
    shape_descriptor,
    sharpness,
    to_frames,
)
from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.io.video import read_video

METRICS = ("sharpness", "motion", "fg", "brightness", "contrast")
ROW_KEY = {"motion": "motion_abs"}  # where a row holds a metric's absolute value (its "motion" is the ratio)


def chunk_bounds(num_frames: int, first_frames: int, chunk_frames: int) -> list[tuple[str, int, int]]:
    """(name, start, end) of the first frame(s) and of each chunk; a last partial chunk is kept."""
    bounds = [("first", 0, min(first_frames, num_frames))] if first_frames else []
    starts = range(first_frames, num_frames, chunk_frames)
    return bounds + [(str(i), s, min(s + chunk_frames, num_frames)) for i, s in enumerate(starts)]


def raw_metrics(video: torch.Tensor) -> dict:
    """Metrics of one (3, T, H, W) chunk in [-1, 1]; ``histogram`` is its (3, bins) colour histogram, ``shape`` its
    (fill, aspect) descriptor."""
    pixels = to_frames(video)
    return {"histogram": color_histogram(video), "sharpness": sharpness(video), "motion": motion(video),
            "fg": foreground_fraction(video), "brightness": pixels.mean().item(), "contrast": pixels.std().item(),
            "shape": shape_descriptor(video)}


class ShapeBank:
    """Shape descriptors of labelled training chunks; a chunk's class is the label of the nearest one."""

    def __init__(self, shapes: np.ndarray, labels: np.ndarray, owner: np.ndarray):
        keep = ~np.isnan(shapes).any(axis=1)
        self.shapes, self.labels, self.owner = shapes[keep], labels[keep], owner[keep]
        self.points = self._scaled(self.shapes)  # (N, 2)

    @staticmethod
    def _scaled(shape: np.ndarray) -> np.ndarray:
        """(fill, aspect) -> (fill, log aspect): a wide and a tall box equally far from a square one."""
        return np.stack([shape[..., 0], np.log(shape[..., 1])], axis=-1)

    def classify(self, shape: np.ndarray, exclude_owner: int = -1) -> int | None:
        """Label of the nearest training chunk (in fill and log aspect), or None without a shape."""
        others = self.owner != exclude_owner
        if np.isnan(shape).any() or not others.any():
            return None
        distance = np.linalg.norm(self.points[others] - self._scaled(shape), axis=1)
        return int(self.labels[others][distance.argmin()])

    def accuracy(self) -> float:
        """Leave-one-video-out accuracy of :meth:`classify` on the bank itself (how far its classes can be trusted)."""
        hits = [self.classify(s, o) == y for s, y, o in zip(self.shapes, self.labels, self.owner)]
        return float(np.mean(hits)) if hits else math.nan


@dataclass
class TrainingChunks:
    """The training chunks a generated chunk is compared with."""
    histograms: np.ndarray      # (N, 3, bins) colour histograms
    sharpness: np.ndarray       # (N,)
    shapes: ShapeBank | None    # None without a labels manifest

    def colour_matched_sharpness(self, histogram: np.ndarray, count: int = 20) -> float:
        """Mean sharpness of the ``count`` training chunks nearest in colour (a dark shape has softer edges)."""
        distance = histogram_distances(histogram, self.histograms)  # (N,)
        return float(self.sharpness[np.argsort(distance)[:count]].mean())


def reference(data: Path, size: int, chunk_frames: int, samples: int,
              exclude: Path) -> tuple[TrainingChunks, dict]:
    """All chunks of ``samples`` training videos (evenly spaced, ``exclude`` left out) and the reference row:
    per-chunk metrics averaged over those chunks (``nn``: to the nearest chunk of another video; ``spread``: 5th and
    95th percentile of the per-video means, how much training videos differ among themselves)."""
    if not data.is_dir():
        raise ValueError(f"training data folder {data} not found; make it with "
                         f"`python scripts/make_synthetic_videos.py --out {data}` or pass --data")
    videos = [v for v in find_videos(data, VIDEO_EXTENSIONS) if v.resolve() != exclude.resolve()]
    if not videos:
        raise ValueError(f"no videos under {data}; make them with "
                         f"`python scripts/make_synthetic_videos.py --out {data}`")
    picked = list(dict.fromkeys(videos[i] for i in np.linspace(0, len(videos) - 1, min(samples, len(videos)))
                                .round().astype(int)))
    manifest = data / DEFAULT_MANIFEST
    labels = load_labels(manifest) if manifest.is_file() else None
    chunks, owner, chunk_labels = [], [], []
    for index, path in enumerate(picked):
        video = read_video(path, size=size)
        for _, start, end in chunk_bounds(video.shape[1], 0, chunk_frames):
            chunks.append({**raw_metrics(video[:, start:end]), "seam": seam(video, start)})
            owner.append(index)
            chunk_labels.append(labels.get(path.relative_to(data).as_posix(), -1) if labels else -1)
    bank, owner = np.stack([c["histogram"] for c in chunks]), np.array(owner)
    shapes = ShapeBank(np.stack([c["shape"] for c in chunks]), np.array(chunk_labels), owner) if labels else None
    mean_hist = bank.mean(axis=0)
    ref = {key: float(np.nanmean([c[key] for c in chunks])) for key in METRICS}
    for key in METRICS:
        per_video = [np.nanmean([c[key] for c, o in zip(chunks, owner) if o == i]) for i in range(len(picked))]
        ref[f"{key}_spread"] = [float(v) / ref[key] for v in np.percentile(per_video, [5, 95])]
    ref["class_accuracy"] = shapes.accuracy() if shapes else None
    ref["seam"] = seam_ratio([c["seam"] for c in chunks], [c["motion"] for c in chunks])
    later = [d for i in range(len(picked)) for d in _from_start(bank[owner == i])[START:]]
    ref["hist_start"] = float(np.mean(later)) if later else math.nan  # how much a training video's colour changes
    ref["hist"] = float(np.mean([histogram_distance(h, mean_hist) for h in bank]))
    ref["nn"] = (float(np.mean([nearest_histogram_distance(h, bank[owner != o]) for h, o in zip(bank, owner)]))
                 if len(picked) > 1 else math.nan)
    ref.update(videos=len(picked), chunks=len(chunks))
    return TrainingChunks(bank, np.array([c["sharpness"] for c in chunks]), shapes), ref


START = 10  # chunks that define how a video starts (its colour and class)
VANISHED_FG = 0.02  # a chunk with less foreground has lost its shape (training shapes cover 0.10-0.20)
SEAM_LIMIT = 1.25  # seams at most this much larger (relative to in-chunk motion) than in training videos
BEYOND_BAR = ("shape never vanishes", "colour kept (last 50 within 2x training's own change)",
              f"chunks join smoothly (seams <= {SEAM_LIMIT}x training's)")


def seam(video: torch.Tensor, start: int) -> float:
    """Mean absolute change from frame ``start - 1`` to frame ``start`` of a (3, T, H, W) video (NaN at 0)."""
    return motion(video[:, start - 1:start + 1]) if start > 0 else math.nan


def seam_ratio(seams: list[float], motions: list[float]) -> float:
    """Mean change across chunk seams / mean frame-to-frame change inside those chunks (chunks without a seam, the
    video's first, left out)."""
    joined = [(s, m) for s, m in zip(seams, motions) if not math.isnan(s)]
    return _ratio(float(np.nanmean([s for s, _ in joined])), float(np.nanmean([m for _, m in joined])))


def _from_start(histograms: np.ndarray) -> list[float]:
    """Colour-histogram distance of each chunk to the mean of the first START chunks (the colour it started with)."""
    start = histograms[:START].mean(axis=0)
    return [histogram_distance(h, start) for h in histograms]


def evaluate(video: torch.Tensor, training: TrainingChunks, ref: dict, first_frames: int,
             chunk_frames: int) -> list[dict]:
    """One row per chunk: histogram distances to the training chunks and to the video's first chunks
    (``hist_start``), metric ratios to ``ref`` (``sharp_colour``: to training chunks of its colour), foreground share,
    class."""
    bank, shapes = training.histograms, training.shapes
    mean_hist, rows, histograms = bank.mean(axis=0), [], []
    bounds = chunk_bounds(video.shape[1], first_frames, chunk_frames)
    for name, start, end in bounds:
        m = raw_metrics(video[:, start:end])
        m["seam"] = seam(video, start)
        histograms.append(m["histogram"])
        rows.append({"chunk": name, "frames": [start, end], "hist": histogram_distance(m["histogram"], mean_hist),
                     "nn": nearest_histogram_distance(m["histogram"], bank),
                     "sharpness": m["sharpness"], "sharp": m["sharpness"] / ref["sharpness"],
                     "sharp_colour": m["sharpness"] / training.colour_matched_sharpness(m["histogram"]),
                     "motion_abs": m["motion"], "motion": m["motion"] / ref["motion"], "fg": m["fg"],
                     "brightness": m["brightness"], "bright": m["brightness"] / ref["brightness"],
                     "contrast": m["contrast"], "contr": m["contrast"] / ref["contrast"],
                     "seam_abs": m["seam"], "seam": _ratio(m["seam"], m["motion"]),
                     "class": shapes.classify(m["shape"]) if shapes else None})
    generated = int(bool(first_frames))  # the given first frames are not a generated chunk
    for row, distance in zip(rows[generated:], _from_start(np.stack(histograms[generated:]))):
        row["hist_start"] = distance
    return rows


def _ratio(value: float, reference: float) -> float:
    """value / reference; NaN (printed as nan, goal failed) where the reference is 0, e.g. a first chunk without
    a shape or without motion."""
    return value / reference if reference else math.nan


def summarize(rows: list[dict], ref: dict, after: int = 20, first: int = 10, last: int = 50) -> dict:
    """The drift bar over the generated chunks (the 'first' row left out); see the module docstring."""
    chunks = [r for r in rows if r["chunk"] != "first"]
    mean = lambda part, key: float(np.nanmean([r[key] for r in part]))  # noqa: E731
    summary: dict = {"chunks": len(chunks), "worst_after": after, "worst": {}}
    late = chunks[after + 1:]
    for key in METRICS:
        column = ROW_KEY.get(key, key)
        if late:
            worst = min(late, key=lambda r: math.inf if math.isnan(r[column]) else r[column])
            summary["worst"][key] = {"chunk": worst["chunk"], "vs_chunk0": _ratio(worst[column], chunks[0][column]),
                                     "vs_train": worst[column] / ref[key]}
    tail, head = chunks[-last:], chunks[:first]
    first_class, _ = _majority(head)
    last_class, share = _majority(tail)
    summary["model"] = {
        "sharpness_vs_train": mean(tail, "sharpness") / ref["sharpness"],
        "sharpness_vs_train_colour": mean(tail, "sharp_colour"),
        "fg_vs_train": mean(tail, "fg") / ref["fg"],
        "brightness_vs_train": mean(tail, "brightness") / ref["brightness"],
        "min_motion_vs_train": float(np.nanmin([r["motion"] for r in chunks])),
        "first_class": first_class, "last_class": last_class, "last_class_share": share,
        "vanished_chunks": sum(r["fg"] < VANISHED_FG for r in chunks),
        "colour_vs_start": mean(tail, "hist_start"), "worst_colour_vs_start": max(r["hist_start"] for r in chunks),
        "seam_vs_train": _ratio(seam_ratio([r["seam_abs"] for r in chunks], [r["motion_abs"] for r in chunks]),
                                ref["seam"])}
    summary["video"] = {key: _ratio(mean(tail, key), mean(head, key)) for key in
                        ("brightness", "contrast", "sharpness", "motion_abs")}
    m, v = summary["model"], summary["video"]
    summary["goals"] = {
        "model sharpness within 15% of training (same colour)": abs(m["sharpness_vs_train_colour"] - 1) <= 0.15,
        "model foreground within 15% of training": abs(m["fg_vs_train"] - 1) <= 0.15,
        "motion never stops (>= 0.1x training)": m["min_motion_vs_train"] >= 0.1,
        "class kept": m["first_class"] is not None and m["first_class"] == m["last_class"],
        "video brightness within 15%": abs(v["brightness"] - 1) <= 0.15,
        "video contrast >= 0.85x": v["contrast"] >= 0.85,
        "video sharpness >= 0.85x": v["sharpness"] >= 0.85,
        "video motion >= 0.5x": v["motion_abs"] >= 0.5,
        # beyond the issue's bar: failures seen in long videos (the shape vanishes, another colour comes back, chunks
        # jump: a model that ignores its context can pass the issue's goals)
        BEYOND_BAR[0]: m["vanished_chunks"] == 0,
        BEYOND_BAR[1]: m["colour_vs_start"] <= 2 * ref["hist_start"],
        BEYOND_BAR[2]: m["seam_vs_train"] <= SEAM_LIMIT}
    return summary


def _majority(rows: list[dict]) -> tuple[int | None, float]:
    """The most frequent class of ``rows`` and its share of them (one misread chunk does not decide)."""
    classes = [r["class"] for r in rows if r["class"] is not None]
    if not classes:
        return None, 0.0
    top = max(set(classes), key=classes.count)
    return top, classes.count(top) / len(rows)


def format_summary(summary: dict, ref: dict) -> str:
    """The summary as text: worst late chunks, the two comparisons, one line per goal."""
    n, lines = summary["chunks"], []
    for key, w in summary["worst"].items():
        lines.append(f"worst {key:>10} after chunk {summary['worst_after']}: chunk {w['chunk']:>4}, "
                     f"{w['vs_chunk0']:.2f}x chunk 0, {w['vs_train']:.2f}x training")
    m, v = summary["model"], summary["video"]
    last = min(50, n)
    lines.append(f"last {last} chunks vs training: sharpness {m['sharpness_vs_train']:.2f}x (training videos "
                 f"{ref['sharpness_spread'][0]:.2f}-{ref['sharpness_spread'][1]:.2f}x; "
                 f"{m['sharpness_vs_train_colour']:.2f}x training chunks of its colour), foreground "
                 f"{m['fg_vs_train']:.2f}x (training videos {ref['fg_spread'][0]:.2f}-{ref['fg_spread'][1]:.2f}x), "
                 f"brightness {m['brightness_vs_train']:.2f}x (training videos {ref['brightness_spread'][0]:.2f}-"
                 f"{ref['brightness_spread'][1]:.2f}x), "
                 f"lowest motion {m['min_motion_vs_train']:.2f}x; class {m['first_class']} (first 10) -> "
                 f"{m['last_class']} (share {m['last_class_share']:.2f}, probe accuracy "
                 f"{ref['class_accuracy'] or math.nan:.2f})")
    lines.append(f"shape vanished (foreground < {VANISHED_FG}) in {m['vanished_chunks']} chunks; colour distance to "
                 f"the first {START} chunks: last {last} {m['colour_vs_start']:.3f}, worst "
                 f"{m['worst_colour_vs_start']:.3f} (training videos {ref['hist_start']:.3f}); seams "
                 f"{m['seam_vs_train']:.2f}x training's (there: seam change {ref['seam']:.2f}x in-chunk change)")
    lines.append(f"last {last} vs first {min(10, n)} chunks: brightness {v['brightness']:.2f}x, contrast "
                 f"{v['contrast']:.2f}x, sharpness {v['sharpness']:.2f}x, motion {v['motion_abs']:.2f}x")
    lines += [f"{'PASS' if ok else 'FAIL'}  {goal}" for goal, ok in summary["goals"].items()]
    return "\n".join(lines)


def format_table(rows: list[dict], ref: dict, chunk_frames: int) -> str:
    """The reference row, then one row per chunk (frame spans inclusive)."""
    def line(name: str, frames: str, values: list[float]) -> str:
        return f"{name:>6} {frames:>9} " + " ".join("     -" if math.isnan(v) else f"{v:6.3f}" for v in values)

    columns = ("hist", "nn", "sharp", "motion", "fg", "bright", "contr", "seam", "class")
    lines = [f"{'chunk':>6} {'frames':>9} " + " ".join(f"{c:>6}" for c in columns),
             line("train", str(chunk_frames), [ref["hist"], ref["nn"], 1.0, 1.0, ref["fg"], 1.0, 1.0, ref["seam"],
                                               math.nan])]
    lines += [line(r["chunk"], f"{r['frames'][0]}-{r['frames'][1] - 1}",
                   [r["hist"], r["nn"], r["sharp"], r["motion"], r["fg"], r["bright"], r["contr"], r["seam"],
                    math.nan if r["class"] is None else r["class"]]) for r in rows]
    return "\n".join(lines)


def _nan_to_none(row: dict) -> dict:
    """JSON has no NaN: undefined values (motion of a single frame) become null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def compare_line(name: str, summary: dict) -> str:
    """One line per video for comparing models and seeds: the issue's goals passed, then the numbers behind them."""
    goals, m, v = summary["goals"], summary["model"], summary["video"]
    issue = [ok for goal, ok in goals.items() if goal not in BEYOND_BAR]
    return (f"{name:<36} {sum(issue)}/{len(issue)} goals, vanished {m['vanished_chunks']:3d}, colour "
            f"{m['colour_vs_start']:.3f}, seams {m['seam_vs_train']:.2f}, class share {m['last_class_share']:.2f}, "
            f"sharp {m['sharpness_vs_train_colour']:.2f}, fg {m['fg_vs_train']:.2f}, "
            f"motion>= {m['min_motion_vs_train']:.2f} | last/first: bright {v['brightness']:.2f} "
            f"contr {v['contrast']:.2f} sharp {v['sharpness']:.2f} motion {v['motion_abs']:.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, nargs="+", help="generated mp4 files (several: one comparison line each)")
    p.add_argument("--data", type=Path, default=Path("data/shapes"), help="training videos (default data/shapes)")
    p.add_argument("--chunk-frames", type=int, default=4, help="frames per generated chunk (demo model: 4)")
    p.add_argument("--first-frames", type=int, default=1, help="frames before the first chunk (default 1)")
    p.add_argument("--samples", type=int, default=30, help="training videos in the reference (default 30)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows, summary and reference to this file "
                   "(several videos: a list of their summaries and references)")
    p.add_argument("--summary-only", action="store_true", help="print the summary, not the per-chunk table")
    args = p.parse_args(argv)
    if args.chunk_frames < 1 or args.first_frames < 0 or args.samples < 1:
        p.error("--chunk-frames and --samples must be >= 1 and --first-frames >= 0")
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
        report = {"video": str(path), "data": str(args.data), "reference": _nan_to_none(ref), "summary": summary}
        reports.append(report if len(args.videos) > 1 else {**report, "chunks": [_nan_to_none(r) for r in rows]})
    if len(args.videos) > 1:
        print("\n".join(["", "comparison (goals: the issue's eight; the numbers as in the summaries above)"] + lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(reports[0] if len(reports) == 1 else reports, indent=1) + "\n")


if __name__ == "__main__":
    main()
