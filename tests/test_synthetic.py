import json

import numpy as np
import pytest

from ca2vdm.data.synthetic import SHAPES, render_shape_video, write_dataset
from ca2vdm.io.video import read_video

from helpers import run_command


@pytest.mark.parametrize("shape", SHAPES)
def test_render_shape_moves_and_stays_in_bounds(shape):
    video = render_shape_video(np.random.default_rng(1), num_frames=40, size=32, shape=shape)
    assert video.shape == (40, 32, 32, 3) and video.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(video[:-1], video[1:]))
    background = video[0, 0, 0].astype(int)
    bright = np.abs(video.astype(int) - background).sum(-1) > 60  # (T, H, W) shape pixels
    assert bright.any(axis=(1, 2)).all()  # shape visible in every frame
    # The whole shape stays inside: its area never shrinks by being clipped at a border.
    area = bright.sum(axis=(1, 2))
    assert area.min() > 0.8 * area.max()
    # Anti-aliased edges produce intermediate values, not just background and colour.
    assert len(np.unique(video.reshape(-1, 3), axis=0)) > 6


def test_render_rejects_unknown_shape():
    with pytest.raises(ValueError, match="hexagon"):
        render_shape_video(np.random.default_rng(0), 4, 32, "hexagon")


def test_write_dataset(tmp_path):
    assert write_dataset(tmp_path, num_videos=3, num_frames=12, size=16, seed=0) == 3
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [0, 1, 2]
    assert json.loads((tmp_path / "classes.json").read_text()) == list(SHAPES)
    for row in rows:
        assert row["shape"] == SHAPES[row["label"]]
        assert read_video(tmp_path / row["file"]).shape == (3, 12, 16, 16)
    assert len(list(tmp_path.glob("*.mp4"))) == 3


def test_make_data_never_leaves_a_mixed_dataset_and_checks_its_arguments_first(tmp_path):
    """An existing dataset was partly replaced (captions.jsonl and the first video), leaving the other videos without
    captions: now an existing folder is refused unless --overwrite, which replaces only an earlier dataset's files;
    bad counts, sizes and an --out that is a file are one line before anything is written (they were tracebacks, and
    --frames 0 left an empty folder)."""
    data = tmp_path / "data"
    assert run_command("make-data", "--out", data, "--num-videos", 3, "--frames", 4, "--size", 16, "--captions") == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    refused = run_command("make-data", "--out", data, "--num-videos", 1, "--frames", 4, "--size", 16)
    assert refused == f"error: --out {data}: already holds 5 files (e.g. captions.jsonl); pass --overwrite to " \
                      "replace a dataset written here before, or choose a new folder"
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    assert run_command("make-data", "--out", data, "--num-videos", 1, "--frames", 4, "--size", 16, "--overwrite") == 0
    assert sorted(p.name for p in data.iterdir()) == ["classes.json", "labels.jsonl", "video_00000.mp4"]
    (data / "mine.txt").write_text("my notes")
    assert "holds files that are not a synthetic dataset's (e.g. mine.txt)" in run_command(
        "make-data", "--out", data, "--overwrite", "--num-videos", 1, "--frames", 4, "--size", 16)
    assert (data / "mine.txt").read_text() == "my notes" and (data / "video_00000.mp4").exists()
    (tmp_path / "file").write_text("x")
    assert run_command("make-data", "--out", tmp_path / "file") == \
        f"error: --out {tmp_path / 'file'}: is a file, not a folder: give a folder (new or existing) to write into"
    for flag, value in [("--num-videos", 0), ("--frames", 0), ("--size", 3), ("--fps", 0)]:
        assert run_command("make-data", "--out", tmp_path / "new", flag, value) == 2  # argparse's one line
    assert not (tmp_path / "new").exists()
