import json

import numpy as np
import pytest

from ca2vdm.data.synthetic import SHAPES, render_shape_video, write_dataset
from ca2vdm.io.video import read_video


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
