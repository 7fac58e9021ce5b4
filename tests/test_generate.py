"""Long-video inference requirements: generate_video and the infer/long_video.py CLI, on a tiny random model.

tiny: 16x16 frames, first frame drawn as a chunk of its own, then chunks of 2 frames, window of 5 frames.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from ca2vdm.checkpoints.weights import load_model, save_weights
from ca2vdm.generation.video_files import GenerationOptions, generate_video
from ca2vdm.io.video import VideoWriter, read_video
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import CHUNK, STEPS, cli, cli_error, random_model

ROOT = Path(__file__).resolve().parents[1]
CLI_PATH = ROOT / "infer" / "long_video.py"
OPTIONS = ("--checkpoint", "--out", "--seed", "--steps", "--shift", "--chunks", "--first-frame", "--label",
           "--cfg-scale", "--cache", "--device", "--dtype", "--fps", "--stats", "--preview", "--verbose")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run many small ops: one thread avoids thread-pool stalls on a busy small machine (6x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_video_frame_count_and_stats(checkpoint, tmp_path):
    out, stats_path = tmp_path / "v.mp4", tmp_path / "stats.json"
    cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--chunks", "4", "--label", "1",
              "--stats", str(stats_path)])
    video = read_video(out)
    assert video.shape == (3, 1 + 4 * CHUNK, 16, 16)
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0.05
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == 1 + 4 * CHUNK and stats["peak_rss_mb"] > 0
    assert [c["index"] for c in stats["chunks"]] == [0, 1, 2, 3]
    assert all(c["seconds"] > 0 and c["model_evals"] == STEPS and c["skipped_evals"] == 0 for c in stats["chunks"])
    assert stats["seconds"] >= sum(c["seconds"] for c in stats["chunks"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_steps_and_guidance_set_model_evals(checkpoint, tmp_path):
    opts = GenerationOptions(chunks=2, label=0, sampler=dict(steps=2, cfg_scale=2.5))  # guidance needs a label
    stats = generate_video(checkpoint, tmp_path / "v.mp4", opts)
    assert [c["model_evals"] for c in stats["chunks"]] == [2 * 2, 2 * 2]  # 2 steps x 2 guidance branches


def test_shift_overrides_the_checkpoints_sampler_schedule(checkpoint, tmp_path):
    recorded = generate_video(checkpoint, tmp_path / "a.mp4", GenerationOptions(chunks=2, label=0))
    shifted = generate_video(checkpoint, tmp_path / "b.mp4",
                             GenerationOptions(chunks=2, label=0, sampler=dict(shift=3.0)))
    assert (recorded["shift"], shifted["shift"]) == (1.0, 3.0)  # the checkpoint's, then the option's
    assert (read_video(tmp_path / "a.mp4") - read_video(tmp_path / "b.mp4")).abs().max() > 0.05  # same noise


@pytest.mark.parametrize("shift", ["0", "-1", "nan"])
def test_bad_shift_is_an_error(checkpoint, tmp_path, capsys, shift):
    out = tmp_path / "o.mp4"
    assert f"argument --shift: must be a finite number in (0, 1000], got '{shift}'" in cli_error(
        capsys, "--checkpoint", checkpoint, "--out", out, "--shift", shift)
    assert not out.exists()


def test_kv_and_none_caches_agree_while_window_not_full(checkpoint, tmp_path, cli_writes):
    """1 + 3 chunks = 7 frames: every chunk sees at most the 5-frame window, so both modes compute the same frames
    (up to float rounding ~1e-7, which does not change the uint8 pixels): identical files. Two more chunks fill the
    window, where the modes legitimately differ, which shows the option reaches the pipeline."""
    def run(cache: str, chunks: int, seed: int = 0) -> Path:
        out = tmp_path / f"{cache}{chunks}-{seed}.mp4"
        opts = GenerationOptions(chunks=chunks, seed=seed, label=1, overwrite=True,  # runs repeat
                                 sampler=dict(cache=cache))
        stats = generate_video(checkpoint, out, opts)
        assert stats["cache"] == cache
        return out

    kv_file = run("kv", 3).read_bytes()
    kv_frames = np.concatenate(cli_writes)  # what each run hands to its writer
    cli_writes.clear()
    assert run("none", 3).read_bytes() == kv_file
    assert kv_frames.shape[0] == 7 and np.array_equal(kv_frames, np.concatenate(cli_writes))
    assert (read_video(run("kv", 3)) - read_video(run("kv", 3, seed=1))).abs().mean() > 0.1  # the seed matters
    kv, none = read_video(run("kv", 5)), read_video(run("none", 5))
    assert (kv[:, 7:] - none[:, 7:]).abs().mean() > 1e-3


def test_peak_memory_does_not_grow_with_chunks(checkpoint, tmp_path):
    """Each run in a fresh process, so ru_maxrss is that run's own peak. Only a growth of ~10 MB over 30 chunks
    shows here; test_kv_cache_is_allocated_once checks the cache's allocation directly."""
    runs = {}
    for chunks in (10, 40):
        stats = tmp_path / f"{chunks}.json"
        argv = [sys.executable, str(CLI_PATH), "--checkpoint", str(checkpoint), "--chunks", str(chunks),
                "--out", str(tmp_path / f"{chunks}.mp4"), "--stats", str(stats)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two runs side by side on a small machine
        runs[chunks] = stats, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks = {}
    for chunks, (stats, proc) in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        result = json.loads(stats.read_text())
        assert result["frames"] == 1 + chunks * CHUNK
        peaks[chunks] = result["peak_rss_mb"]
    assert peaks[40] <= peaks[10] * 1.05 + 10, peaks


def test_kv_cache_is_allocated_once():
    model = random_model(num_classes=3, prefix_frames=1)
    pipe = LongVideoPipeline(model, steps=1, cfg_scale=2.0)  # two guidance branches, batched in one cache
    state = pipe.start(label=0)
    caches = [state.conditioning.cache]
    assert caches[0].batch == 2

    def storage() -> list[tuple[int, int]]:
        names = ("k", "v", "prefix_k", "prefix_v")
        return [(getattr(c, name).data_ptr(), c.nbytes()) for c in caches for name in names]

    before = storage()
    for _ in range(12):  # 1 + 11 * 2 = 23 frames: the 7-slot ring wraps three times
        pipe.next_chunk(state)
    assert state.conditioning.cache is caches[0] and storage() == before
    assert caches[0].frames_committed == 23


def test_thousand_chunks(checkpoint):
    model, _ = load_model(checkpoint)
    pipe = LongVideoPipeline(model, steps=1)
    state = pipe.start(seed=0)
    cache = state.conditioning.cache
    for _ in range(1000):
        frames = pipe.next_chunk(state).frames
        assert torch.isfinite(frames).all()
    assert frames.shape == (1, 3, CHUNK, 16, 16) and frames.std() > 0.05
    assert cache.frames_committed == 1 + 999 * CHUNK == state.frames


@pytest.mark.parametrize("kind", ["png", "mp4"])
def test_first_frame(checkpoint, tmp_path, kind):
    ramp = np.linspace(30, 220, 20, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128 * np.ones((20, 20), np.uint8)), axis=-1)
    if kind == "png":
        given, frames = tmp_path / "first.png", 1
        Image.fromarray(image).save(given)
    else:
        given, frames = tmp_path / "first.mp4", 3
        with VideoWriter(given, fps=8) as writer:
            writer.write(np.stack([np.roll(image, i, axis=1) for i in range(frames)]))
    out = tmp_path / "out.mp4"
    generate_video(checkpoint, out, GenerationOptions(chunks=3, first_frame=str(given)))
    video, first = read_video(out), read_video(given, size=16)
    assert video.shape[1] == frames + 3 * CHUNK
    assert (video[:, :frames] - first).abs().mean() < 0.05  # the given frames open the video


@pytest.mark.parametrize("name", ["broken.png", "broken.mp4"])
def test_unreadable_first_frame(checkpoint, tmp_path, capsys, name):
    bad = tmp_path / name
    bad.write_bytes(b"not an image or a video" * 10)
    out = tmp_path / "out.mp4"
    assert str(bad) in cli_error(capsys, "--checkpoint", checkpoint, "--out", out, "--first-frame", bad)
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert [o for o in OPTIONS if o not in text] == []


def test_zero_chunks_is_an_error(checkpoint, tmp_path, capsys):
    assert "--chunks" in cli_error(capsys, "--checkpoint", checkpoint, "--out", tmp_path / "o.mp4", "--chunks", "0")
    with pytest.raises(ValueError, match="chunks=0: must be a positive number of chunks"):
        generate_video(checkpoint, tmp_path / "o.mp4", GenerationOptions(chunks=0))
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda(checkpoint, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert "CUDA" in cli_error(capsys, "--checkpoint", checkpoint, "--out", out, "--device", "cuda")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_bad_checkpoint(checkpoint, tmp_path, capsys, damage):
    bad, out = tmp_path / "bad.safetensors", tmp_path / "o.mp4"
    if damage == "garbage":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":  # intact header, tensors cut short
        bad.write_bytes(checkpoint.read_bytes()[:-1000])
    assert str(bad) in cli_error(capsys, "--checkpoint", bad, "--out", out)
    assert not out.exists()


def test_preview_png_beside_video(checkpoint, tmp_path):
    out = tmp_path / "v.mp4"
    stats = generate_video(checkpoint, out, GenerationOptions(chunks=3, preview=True))
    sheet = out.with_suffix(".png")
    assert stats["preview"] == str(sheet)
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width > 16 and image.height >= 16


@pytest.mark.parametrize("sink_frames", [0, 1])
def test_given_video_commits_only_what_can_still_matter(checkpoint, tmp_path, monkeypatch, sink_frames):
    """A 30-frame given video is streamed; only the frames from conditioning_start on are committed (their earlier
    neighbours keep their chunk alignment and noise), and the continuation equals committing every frame (same seed)
    to float precision. Committing one chunk fewer changes it: with the KV cache a kept frame's deeper-layer keys
    carry the window before it, so the last max_context_frames frames alone are not enough. Attention sinks are
    kept besides."""
    from ca2vdm.encoders.codec import PixelCodec
    from ca2vdm.generation.api import model_input
    from ca2vdm.generation.given import conditioning_start

    if sink_frames:
        model = random_model(num_classes=3, sink_frames=sink_frames)
        checkpoint = tmp_path / "sinks.safetensors"
        save_weights(checkpoint, model.state_dict(), model.cfg, {"diffusion_config": {"steps": STEPS}})
    given = tmp_path / "given.mp4"
    with VideoWriter(given, fps=8) as writer:
        writer.write(np.random.default_rng(0).integers(0, 256, (30, 16, 16, 3), dtype=np.uint8))
    model, meta = load_model(checkpoint)
    pipe = LongVideoPipeline.for_checkpoint(model, meta)
    video = model_input(PixelCodec(), read_video(given, size=16))  # (1, 3, 30, 16, 16)
    sinks = video[:, :, :sink_frames]

    def continuation(frames_before: int, sink_values: torch.Tensor = sinks) -> torch.Tensor:
        given = torch.cat([sink_values, video[:, :, frames_before:]], dim=2) if frames_before else video
        state = pipe.start(label=1, seed=5, first_frames=given, frames_before=frames_before)
        return torch.cat([pipe.next_chunk(state).frames for _ in range(3)], dim=2)

    start = conditioning_start(model.cfg, pipe.settings.cache, 30)
    assert 0 < start and 30 - start < 30 - model.cfg.max_context_frames  # skips some, keeps more than the window
    every = continuation(0)
    assert (continuation(start) - every).abs().max() < 1e-5
    if sink_frames:  # the sinks still matter 30 frames later
        assert (continuation(start, torch.zeros_like(sinks)) - every).abs().max() > 1e-5
    else:
        assert (continuation(start + CHUNK) - every).abs().max() > 1e-5

    calls = []
    original = LongVideoPipeline.start
    monkeypatch.setattr(LongVideoPipeline, "start", lambda self, **kw: calls.append(kw) or original(self, **kw))
    out = tmp_path / "out.mp4"
    generate_video(checkpoint, out, GenerationOptions(chunks=2, label=1, seed=5, first_frame=str(given)))
    assert calls[0]["frames_before"] == start and calls[0]["first_frames"].shape[2] == sink_frames + 30 - start
    assert torch.equal(calls[0]["first_frames"], torch.cat([sinks, video[:, :, start:]], dim=2))
    assert read_video(out).shape[1] == 30 + 2 * CHUNK  # every given frame is copied into the output


def _write_long_video(path: Path, frames: int, height: int = 240, width: int = 320) -> None:
    """A fast-to-encode (MPEG-4 part 2) moving gradient."""
    x = np.linspace(0, 6, width)[None, :]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            frame = np.zeros((height, width, 3), np.uint8)
            frame[..., 0] = 127 + 100 * np.sin(x + 0.2 * t)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def test_memory_is_flat_in_the_length_of_a_given_video(checkpoint, tmp_path):
    """Peak RSS (ru_maxrss, one fresh process each) continuing a 600-frame 320x240 video stays within 1.2x of
    continuing a 320x240 image: decoded whole, the video alone would take 138 MB as uint8 and 553 MB as floats."""
    video, image = tmp_path / "long.mp4", tmp_path / "still.png"
    _write_long_video(video, 600)
    Image.fromarray(np.full((240, 320, 3), 90, np.uint8)).save(image)
    runs = {}
    for given in (video, image):
        stats = tmp_path / f"{given.suffix[1:]}.json"
        argv = [sys.executable, str(CLI_PATH), "--checkpoint", str(checkpoint), "--chunks", "1", "--first-frame",
                str(given), "--out", str(tmp_path / f"{given.suffix[1:]}.mp4"), "--stats", str(stats)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        runs[given] = stats, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks = {}
    for given, (stats, proc) in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        peaks[given.suffix] = json.loads(stats.read_text())["peak_rss_mb"]
    assert json.loads(runs[video][0].read_text())["frames"] == 600 + CHUNK
    assert peaks[".mp4"] <= 1.2 * peaks[".png"], peaks
