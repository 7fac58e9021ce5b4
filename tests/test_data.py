import json
import logging

import numpy as np
import pytest
import torch

from ca2vdm.data.clips import VideoFolderDataset
from ca2vdm.io.video import VideoWriter


def write_video(path, num_frames: int, height: int = 32, width: int = 32, gray: bool = False) -> None:
    """Video whose frame t has brightness proportional to t, so clips reveal their position."""
    levels = np.linspace(20, 235, num_frames).round().astype(np.uint8)  # (T,)
    frames = np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()
    if not gray:
        frames[..., 2] = 90  # constant blue channel
    with VideoWriter(path, fps=8) as writer:
        writer.write(frames)


def test_skips_truncated_and_non_video_files(tmp_path, caplog):
    write_video(tmp_path / "good.mp4", 24)
    write_video(tmp_path / "full.mp4", 24)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "full.mp4").unlink()
    (tmp_path / "truncated.mp4").write_bytes(data[: int(len(data) * 0.4)])
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    (tmp_path / "readme.txt").write_text("ignored: not a video extension\n")

    with caplog.at_level(logging.WARNING, logger="ca2vdm.data"):
        ds = VideoFolderDataset(tmp_path, num_frames=8, resolution=16)
    assert len(ds) == 1
    assert len(ds.skipped) == 2
    assert {p.split("/")[-1] for p, _ in ds.skipped} == {"truncated.mp4", "notes.mp4"}
    assert len([r for r in caplog.records if "skipped 2" in r.getMessage()]) == 1
    item = ds[0]
    assert item["video"].shape == (3, 8, 16, 16) and item["video"].dtype == torch.float32
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["label"].dtype == torch.long and item["label"].ndim == 0
    assert ds.num_classes == 0


def test_too_short_video_is_skipped(tmp_path):
    write_video(tmp_path / "long.mp4", 20)
    write_video(tmp_path / "short.mp4", 6)
    ds = VideoFolderDataset(tmp_path, num_frames=4, frame_stride=3)  # clip spans 10 frames
    assert [p.name for p in ds.videos] == ["long.mp4"]
    ((path, reason),) = ds.skipped
    assert path.endswith("short.mp4") and "too short" in reason and "6 frames" in reason


def test_empty_folder_raises(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)) as info:
        VideoFolderDataset(tmp_path, num_frames=4)
    assert "ca2vdm make-data" in str(info.value)


def test_clips_deterministic_per_seed_epoch_index(tmp_path):
    write_video(tmp_path / "long.mp4", 60)
    ds = VideoFolderDataset(tmp_path, num_frames=4, resolution=8, seed=3)
    first = ds[0]["video"]
    assert torch.equal(first, VideoFolderDataset(tmp_path, num_frames=4, resolution=8, seed=3)[0]["video"])
    clips = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        clips.append(ds[0]["video"])
    assert torch.equal(clips[0], first)
    assert any(not torch.equal(clips[0], clip) for clip in clips[1:])


def test_labels_from_jsonl(tmp_path, caplog):
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_video(tmp_path / name, 6)
    rows = [{"file": "a.mp4", "label": 2}, {"file": "sub/c.mp4", "label": 1}]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="ca2vdm.data"):
        ds = VideoFolderDataset(tmp_path, num_frames=4, resolution=8)
    assert [ds[i]["label"].item() for i in range(len(ds))] == [2, 0, 1]
    assert ds.num_classes == 3
    assert len([r for r in caplog.records if "label 0" in r.getMessage()]) == 1


def test_labels_from_csv_manifest(tmp_path):
    write_video(tmp_path / "a.mp4", 6)
    (tmp_path / "meta.csv").write_text("file,label\na.mp4,4\n")
    ds = VideoFolderDataset(tmp_path, num_frames=4, resolution=8, manifest="meta.csv")
    assert ds[0]["label"].item() == 4 and ds.num_classes == 5


def test_grayscale_odd_sized_video(tmp_path):
    write_video(tmp_path / "gray.mp4", 10, height=30, width=22, gray=True)
    video = VideoFolderDataset(tmp_path, num_frames=5, resolution=16)[0]["video"]
    assert video.shape == (3, 5, 16, 16)
    assert (video[0] - video[2]).abs().max() < 0.1  # stays gray
    assert torch.all(video[:, 1:].mean(dim=(0, 2, 3)) > video[:, :-1].mean(dim=(0, 2, 3)))


def test_read_time_failure_falls_back_to_next_video(tmp_path):
    write_video(tmp_path / "a.mp4", 12)
    write_video(tmp_path / "b.mp4", 12)
    ds = VideoFolderDataset(tmp_path, num_frames=4, resolution=8)
    (tmp_path / "a.mp4").write_text("corrupted after probing")
    item = ds[0]
    assert item["video"].shape == (3, 4, 8, 8)
    assert torch.equal(ds[0]["video"], item["video"])  # same fallback clip again
    assert ds[1]["video"].shape == (3, 4, 8, 8)
    assert [p.split("/")[-1] for p, _ in ds.skipped] == ["a.mp4"]


def test_symlinked_subfolder_is_followed_once(tmp_path):
    """A symlinked folder of videos is searched (its files keep their path through the link, as manifests name them);
    a link back to an ancestor does not loop, and a folder reached twice is read once."""
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    elsewhere.mkdir()
    root.mkdir()
    write_video(elsewhere / "linked.mp4", 6)
    write_video(root / "own.mp4", 6)
    (root / "shared").symlink_to(elsewhere, target_is_directory=True)
    (root / "shared_again").symlink_to(elsewhere, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "labels.jsonl").write_text('{"file": "shared/linked.mp4", "label": 1}\n{"file": "own.mp4", "label": 0}\n')
    ds = VideoFolderDataset(root, num_frames=4, resolution=8)
    assert [p.relative_to(root).as_posix() for p in ds.videos] == ["own.mp4", "shared/linked.mp4"]
    assert ds.labels == [0, 1]
