"""The long-video drift bar (ca2vdm/evaluation/drift.py, drift_summary.py, ``ca2vdm eval long-video``): per-chunk
rows, the class probe and the goals."""
import json

import numpy as np
import torch

from ca2vdm.data.synthetic import render_shape_video, write_dataset
from ca2vdm.evaluation.drift import chunk_bounds, evaluate, reference
from ca2vdm.evaluation.drift_summary import BEYOND_BAR, format_summary, summarize
from ca2vdm.io.video import VideoWriter

from helpers import run_command


def _as_model_video(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1


def test_a_training_like_video_passes_and_a_fading_one_fails(tmp_path):
    data = tmp_path / "shapes"
    write_dataset(data, num_videos=9, num_frames=40, size=32, seed=0)
    training, ref = reference(data, 32, 4, samples=9, exclude=tmp_path / "none.mp4")
    assert ref["class_accuracy"] == 1.0  # the probe names every training chunk's class from the other videos

    square = render_shape_video(np.random.default_rng(99), 1 + 4 * 80, 32, "square")  # 80 chunks, unseen video
    rows = evaluate(_as_model_video(square), training, ref, first_frames=1, chunk_frames=4)
    assert len(rows) == 81 and {r["class"] for r in rows[1:]} == {1}
    summary = summarize(rows, ref)
    video_goals = {k: v for k, v in summary["goals"].items() if k.startswith("video") or "class" in k}
    assert all(video_goals.values()), summary
    low, high = ref["brightness_spread"]
    assert low <= summary["model"]["brightness_vs_train"] <= high  # as bright as a training video

    fading = square.astype(np.float32) * np.linspace(1, 0.3, len(square))[:, None, None, None]  # fades to 30 %
    rows = evaluate(_as_model_video(fading.astype(np.uint8)), training, ref, 1, 4)
    summary = summarize(rows, ref)
    assert not summary["goals"]["video brightness within 15%"] and not summary["goals"]["video contrast >= 0.85x"]
    assert summary["worst"]["brightness"]["vs_chunk0"] < 0.5
    assert summary["model"]["brightness_vs_train"] < low  # darker than any training video
    text = format_summary(summary, ref)
    assert "FAIL  video brightness within 15%" in text and "worst brightness after chunk 20" in text


def test_a_first_chunk_without_a_shape_does_not_stop_the_summary(tmp_path):
    """Ratios against a zero first chunk (here: no shape in the first generated chunk) are NaN and print as nan;
    nothing raises, so one such video does not stop the evaluation of the others."""
    data = tmp_path / "shapes"
    write_dataset(data, num_videos=3, num_frames=20, size=32, seed=1)
    training, ref = reference(data, 32, 4, samples=3, exclude=tmp_path / "none.mp4")
    video = render_shape_video(np.random.default_rng(7), 1 + 4 * 30, 32, "circle")
    video[1:5] = video[0, 0, 0]  # chunk 0 (after the first frame): background only
    rows = evaluate(_as_model_video(video), training, ref, first_frames=1, chunk_frames=4)
    assert rows[0]["chunk"] == "first" and rows[1]["fg"] == 0
    summary = summarize(rows, ref)
    assert np.isnan(summary["worst"]["fg"]["vs_chunk0"]) and summary["worst"]["fg"]["vs_train"] > 0.5
    assert "nanx chunk 0" in format_summary(summary, ref)


def test_cli_prints_the_summary_and_writes_json(tmp_path, capsys):
    data = tmp_path / "shapes"
    write_dataset(data, num_videos=3, num_frames=20, size=32, seed=1)
    video = tmp_path / "gen.mp4"
    with VideoWriter(video, fps=8) as writer:
        writer.write(render_shape_video(np.random.default_rng(5), 1 + 4 * 30, 32, "circle"))
    assert run_command("eval", "long-video", video, "--data", data, "--json", tmp_path / "eval.json",
                       "--summary-only") == 0
    out = capsys.readouterr().out
    assert "last 30 vs first 10 chunks" in out and "class kept" in out and "chunk   frames" not in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert len(report["chunks"]) == 31 and report["summary"]["model"]["first_class"] == 0

    assert run_command("eval", "long-video", video, video, "--data", data, "--json", tmp_path / "two.json",
                       "--summary-only") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("gen.mp4") and "goals, vanished   0" in lines[-1] and lines[-1] == lines[-2]
    assert len(json.loads((tmp_path / "two.json").read_text())) == 2


def test_chunks_that_do_not_continue_each_other_fail_the_seam_goal(tmp_path):
    """A video whose chunks each come from another moment (a model ignoring its context) jumps at every seam; the
    same frames in their own order join as smoothly as training videos do."""
    data = tmp_path / "shapes"
    write_dataset(data, num_videos=6, num_frames=40, size=32, seed=2)
    training, ref = reference(data, 32, 4, samples=6, exclude=tmp_path / "none.mp4")
    assert 0.7 < ref["seam"] < 1.3  # a training video's chunk seams are ordinary frame steps
    goal = BEYOND_BAR[2]

    smooth = render_shape_video(np.random.default_rng(3), 1 + 4 * 40, 32, "circle")
    summary = summarize(evaluate(_as_model_video(smooth), training, ref, 1, 4), ref)
    assert summary["goals"][goal] and summary["model"]["seam_vs_train"] < 1.25

    chunks = smooth[1:].reshape(40, 4, *smooth.shape[1:])
    shuffled = np.concatenate([smooth[:1], chunks[np.random.default_rng(4).permutation(40)].reshape(-1,
                                                                                                    *smooth.shape[1:])])
    rows = evaluate(_as_model_video(shuffled), training, ref, 1, 4)
    summary = summarize(rows, ref)
    assert not summary["goals"][goal] and summary["model"]["seam_vs_train"] > 2
    assert np.isnan(rows[0]["seam"]) and rows[1]["seam"] > 0  # the given first frame has no seam before it
    assert f"FAIL  {goal}" in format_summary(summary, ref)


def test_chunk_bounds_are_the_chunk_layouts():
    """The given first frame(s), then chunks of chunk_frames (the last one partial), as ChunkLayout lays them out."""
    assert chunk_bounds(10, 1, 4) == [("first", 0, 1), ("0", 1, 5), ("1", 5, 9), ("2", 9, 10)]
    assert chunk_bounds(8, 0, 4) == [("0", 0, 4), ("1", 4, 8)]
    assert chunk_bounds(7, 2, 4) == [("first", 0, 2), ("0", 2, 6), ("1", 6, 7)]
    assert chunk_bounds(1, 1, 4) == [("first", 0, 1)]
