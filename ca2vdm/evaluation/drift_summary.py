"""The long-video drift bar over a video's chunk rows (:mod:`ca2vdm.evaluation.drift`), and its text.

Summary (issue 13's drift bar): the worst chunk after chunk 20 for every metric, relative to chunk 0 and to the
training data; the model goals (last 50 chunks: sharpness within 15 % of training chunks of the same colour (a dark
shape has softer edges), foreground within 15 % of the training data's, motion never below 0.1x training, the class
kept: the most frequent class of the first 10 chunks is the last 50's) and the video goals (last 50 chunks against
the first 10: brightness within 15 %, contrast and sharpness >= 0.85x, motion >= 0.5x), and beyond the issue's bar:
the shape never vanishes, the colour is kept, and the seams between chunks are at most ``SEAM_LIMIT`` times as large
(relative to the motion inside chunks) as at the same frames of training videos.
"""
from __future__ import annotations

import math

import numpy as np

from ca2vdm.evaluation.drift import METRICS, ROW_KEY, START
from ca2vdm.evaluation.metrics import ratio
from ca2vdm.evaluation.seams import seam_ratio

VANISHED_FG = 0.02  # a chunk with less foreground has lost its shape (training shapes cover 0.10-0.20)
SEAM_LIMIT = 1.25  # seams at most this much larger (relative to in-chunk motion) than in training videos
BEYOND_BAR = ("shape never vanishes", "colour kept (last 50 within 2x training's own change)",
              f"chunks join smoothly (seams <= {SEAM_LIMIT}x training's)")


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
            summary["worst"][key] = {"chunk": worst["chunk"], "vs_chunk0": ratio(worst[column], chunks[0][column]),
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
        "seam_vs_train": ratio(seam_ratio([r["seam_abs"] for r in chunks], [r["motion_abs"] for r in chunks]),
                               ref["seam"])}
    summary["video"] = {key: ratio(mean(tail, key), mean(head, key)) for key in
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


def nan_to_none(row: dict) -> dict:
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
