import os
import platform
import re
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ca2vdm.io.video import (
    VideoWriter,
    read_frames,
    read_video,
    resize_center_crop,
    save_contact_sheet,
    stream_video,
    to_uint8,
)


def smooth_frames(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Slowly moving colour gradients, (T, H, W, 3) uint8."""
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    frames = [
        np.stack([0.5 + 0.4 * np.sin(3 * x + 0.3 * t), y, np.full_like(x, 0.4)], axis=-1)
        for t in range(num_frames)
    ]
    return (np.stack(frames) * 255).round().astype(np.uint8)


def as_float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # (C, T, H, W)


def test_write_then_read_roundtrip(tmp_path):
    frames = smooth_frames(10)
    path = tmp_path / "out" / "clip.mp4"  # directory is created
    with VideoWriter(path, fps=8) as writer:
        writer.write(frames[:4])
        writer.write(frames[4:])
        assert writer.frames_written == 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.mp4"]

    video = read_video(path)
    assert video.shape == (3, 10, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert (video - as_float(frames)).abs().mean() < 0.08

    last = read_video(path, num_frames=3)
    assert torch.equal(last, video[:, -3:])
    assert read_video(path, size=16).shape == (3, 10, 16, 16)


def test_odd_frame_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=8) as writer:
        writer.write(smooth_frames(3, height=21, width=15))
    assert read_video(path).shape == (3, 3, 22, 16)


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(KeyError):
        with VideoWriter(path, fps=8) as writer:
            writer.write(smooth_frames(5))
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_frames_and_unusable_directory(tmp_path):
    with pytest.raises(ValueError, match="uint8"), VideoWriter(tmp_path / "a.mp4", fps=8) as writer:
        writer.write(smooth_frames(2).astype(np.float32))
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="output directory"):
        VideoWriter(blocker / "clip.mp4", fps=8)


def test_image_reads_as_single_frame(tmp_path):
    path = tmp_path / "frame.png"
    Image.fromarray(smooth_frames(1, 20, 40)[0]).save(path)
    assert read_video(path).shape == (3, 1, 20, 40)
    assert read_video(path, num_frames=5, size=8).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("name, content", [("missing.mp4", None), ("garbage.mp4", b"not a video")])
def test_unreadable_file_raises_value_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=name):
        read_video(path)


def test_resize_center_crop_shapes_and_grayscale():
    rgb = np.zeros((2, 30, 22, 3), np.uint8)
    rgb[:, :, :11] = 255  # left half white
    out = resize_center_crop(rgb, 11)
    assert out.shape == (3, 2, 11, 11)
    assert out[:, :, :, 0].min() > 0.9 and out[:, :, :, -1].max() < -0.9
    assert resize_center_crop(np.full((9, 7), 255, np.uint8), 4).shape == (3, 1, 4, 4)
    single = resize_center_crop(np.zeros((2, 8, 8, 1), np.uint8), 8)
    assert single.shape == (3, 2, 8, 8) and torch.all(single == -1)


def test_to_uint8_roundtrip_and_gray():
    frames = smooth_frames(2)
    assert np.array_equal(to_uint8(as_float(frames)), frames)
    gray = to_uint8(torch.zeros(1, 2, 4, 4))
    assert gray.shape == (2, 4, 4, 3) and np.all(gray == 128)


def test_contact_sheet_size(tmp_path):
    frames = smooth_frames(5, height=10, width=12)
    path = tmp_path / "sheet.png"
    save_contact_sheet(frames, path, frames_per_row=3, gap=2)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (2 * 10 + 2, 3 * 12 + 2 * 2, 3)
    assert np.array_equal(sheet[:10, :12], frames[0])
    assert np.all(sheet[12:, 28:] == 0)  # padded last-row slot is black


def test_read_frames_survives_decord_width_bug(tmp_path):
    # decord 0.6 fails on some widths (16, 24, 48, 72 ...); read_frames falls back to PyAV.
    frames = smooth_frames(6, height=16, width=16)
    path = tmp_path / "narrow.mp4"
    with VideoWriter(path, fps=8) as writer:
        writer.write(frames)
    out = read_frames(path, [1, 4, 4])
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frames[[1, 4, 4]]).mean() < 10


def test_stream_video_equals_read_video_batch_by_batch(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=8) as writer:
        writer.write(smooth_frames(11, height=24, width=40))
    batches = list(stream_video(path, size=16, batch_frames=4))
    assert [b.shape for b in batches] == [(3, 4, 16, 16)] * 2 + [(3, 3, 16, 16)]
    assert torch.equal(torch.cat(batches, dim=1), read_video(path, size=16))
    image = tmp_path / "frame.png"
    Image.fromarray(smooth_frames(1, 20, 40)[0]).save(image)
    assert torch.equal(torch.cat(list(stream_video(image, size=8)), dim=1), read_video(image, size=8))


def test_input_that_is_not_a_file_says_what_it_is(tmp_path):
    for read in (read_video, lambda p: list(stream_video(p, size=8))):
        with pytest.raises(ValueError, match="is a directory"):
            read(tmp_path)
        with pytest.raises(ValueError, match="is not a regular file"):
            read("/dev/null")
        with pytest.raises(ValueError, match="file not found"):
            read(tmp_path / "missing.mp4")


def test_decoder_internals_stay_out_of_messages(tmp_path):
    """An H.264 file cut after its header opens and then fails: decord's message named its own source file
    (video_reader.cc) and PyAV's an error number; the messages name the user's file and the problem."""
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(40):
            frame = np.random.default_rng(t).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    for read in (read_video, lambda p: list(stream_video(p, size=8))):
        with pytest.raises(ValueError) as error:
            read(cut)
        assert str(cut) in str(error.value) and not re.search(r"\.cc|github|Errno|\[\d", str(error.value))


def test_unreadable_videos_print_no_raw_decoder_lines(tmp_path, capfd):
    """A non-video and a truncated mp4 give our ValueError and nothing else: decord's C++ log and FFmpeg's own
    lines ("moov atom not found") no longer reach stderr before the tool's message."""
    with VideoWriter(tmp_path / "whole.mp4", fps=8) as writer:
        writer.write(smooth_frames(24))
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mp4").write_text("not a video")
    capfd.readouterr()
    for name in ("text.mp4", "truncated.mp4"):
        with pytest.raises(ValueError, match=name):
            read_frames(tmp_path / name, range(24))
    assert capfd.readouterr().err == ""


# Writes six low-motion shape clips (two of which libx264's B-frame rate control encoded from memory it never wrote)
# twice in one process; prints each file's sha256.
_WRITE_TWICE = r"""
import hashlib, sys, numpy as np
from ca2vdm.data.synthetic import SHAPES, render_shape_video
from ca2vdm.io.video_writer import VideoWriter
for seed in range(6):
    frames = render_shape_video(np.random.default_rng(seed), 13, 32, SHAPES[seed % 3])
    for _ in range(2):
        with VideoWriter(sys.argv[1], fps=8, overwrite=True) as writer:
            writer.write(frames)
        print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_PERTURB_ is glibc's")
def test_the_same_frames_give_the_same_file_whatever_the_heap_holds(tmp_path):
    """glibc's MALLOC_PERTURB_ fills fresh memory with a byte: a file that depends on uninitialised memory changes with
    it (it did for two of these clips: B-frames, docs/reliability.md), while the same frames must give the same bytes
    in every process and every write."""
    runs = [subprocess.run([sys.executable, "-c", _WRITE_TWICE, str(tmp_path / f"{fill}.mp4")], capture_output=True,
                           text=True, check=True, env={**os.environ, "MALLOC_PERTURB_": str(fill)}).stdout.split()
            for fill in (85, 170)]
    assert len(runs[0]) == 12 and runs[0] == runs[1]
    assert runs[0][0::2] == runs[0][1::2]  # the first write of a process equals the next
