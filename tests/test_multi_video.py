"""Many videos (ca2vdm/multi_video.py): per-seed noise, batches, several processes, stops."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.generation.many import assigned_seeds, generate_videos, video_path
from ca2vdm.generation.video_files import GenerationOptions, Stopped, generate_video
from ca2vdm.io.video import read_video
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = random_model(num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_weights(path, model.state_dict(), model.cfg,
                 {"diffusion_config": {"steps": 3, "shift": 1.0, "cond_noise": 0.05, "cfg_scale": 1.5}})
    return path


@pytest.fixture(scope="module")
def singles(checkpoint, tmp_path_factory) -> dict[int, torch.Tensor]:
    """Seeds 5, 6, 7 each generated alone (guided: label 1, scale 1.5), decoded from their mp4s."""
    out = tmp_path_factory.mktemp("singles")
    return {seed: read_video(generate_video(checkpoint, out / f"{seed}.mp4",
                                            GenerationOptions(chunks=CHUNKS, seed=seed, label=1))["video"])
            for seed in (5, 6, 7)}


def assert_same_video(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float rounding: a rounding flip of a uint8 pixel may change the h264 encoding slightly."""
    assert a.shape == b.shape
    assert (a - b).abs().mean() < 2e-3 and (a - b).abs().max() < 0.1


def test_batched_seeds_equal_their_single_runs():
    """A batch of seeds [3, 4] draws each video's noise from its own generator: each row equals the video of its
    seed generated alone (both guidance branches batched, first frame drawn by the model)."""
    model = random_model(num_classes=3)
    pipe = LongVideoPipeline(model, steps=3, cfg_scale=1.5)

    def video(batch: int, seed) -> torch.Tensor:
        state = pipe.start(batch=batch, label=1, seed=seed)
        return torch.cat([pipe.next_chunk(state).frames for _ in range(4)], dim=2)  # (B, C, 7, H, W)

    both = video(2, [3, 4])
    for row, seed in enumerate((3, 4)):
        torch.testing.assert_close(both[row:row + 1], video(1, seed), rtol=0, atol=1e-5)
    assert (both[0] - both[1]).abs().mean() > 0.1  # different seeds, different videos
    with pytest.raises(ValueError, match="3 seeds for a batch of 2"):
        pipe.start(batch=2, seed=[1, 2, 3])


def test_seeds_are_split_across_processes_once_each():
    shares = [assigned_seeds(10, 7, rank, 3) for rank in range(3)]
    assert shares == [[10, 13, 16], [11, 14], [12, 15]]
    assert sorted(sum(shares, [])) == list(range(10, 17))


def test_two_videos_in_one_batch_equal_single_runs(checkpoint, singles, tmp_path):
    """--num-videos 2 --batch 2 --seed 5: two mp4s named by seed, each equal to the single run of its seed, and a
    stats entry per video."""
    stats_file = tmp_path / "stats.json"
    cmd = [sys.executable, str(ROOT / "infer/long_video.py"), "--checkpoint", str(checkpoint), "--chunks",
           str(CHUNKS), "--label", "1", "--seed", "5", "--num-videos", "2", "--batch", "2",
           "--out", str(tmp_path / "v.mp4"), "--stats", str(stats_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for seed in (5, 6):
        assert_same_video(read_video(tmp_path / f"v_seed{seed}.mp4"), singles[seed])
    stats = json.loads(stats_file.read_text())
    assert [(v["seed"], v["video"], len(v["chunks"])) for v in stats["videos"]] == \
        [(s, str(tmp_path / f"v_seed{s}.mp4"), CHUNKS) for s in (5, 6)]


def test_two_processes_write_every_video(checkpoint, singles, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 (CPU, gloo) with --num-videos 3: rank 0 makes seeds 5 and
    7, rank 1 seed 6, each equal to its single-process run; each rank writes its own stats."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(ROOT / "infer/long_video.py"), "--checkpoint", str(checkpoint), "--chunks", str(CHUNKS), "--label",
           "1", "--seed", "5", "--num-videos", "3", "--out", str(tmp_path / "v.mp4"), "--stats",
           str(tmp_path / "stats.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (5, 6, 7):
        assert_same_video(read_video(tmp_path / f"v_seed{seed}.mp4"), singles[seed])
    ranks = [json.loads((tmp_path / f"stats.rank{r}.json").read_text()) for r in (0, 1)]
    assert [[v["seed"] for v in r["videos"]] for r in ranks] == [[5, 7], [6]]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]


class StopDuringSecondVideo:
    """A stop request that arrives after ``polls`` polls (the first video polls once per step and chunk)."""

    def __init__(self, polls: int):
        self.polls, self.signum = polls, None

    def check(self) -> None:
        self.polls -= 1
        if self.polls < 0:
            self.signum = 15
            raise KeyboardInterrupt


def test_a_failure_leaves_finished_videos_intact(checkpoint, singles, tmp_path):
    """Seeds 5 and 6 one at a time, stopped in the second one's second chunk: the first video is complete and equal
    to its single run, the second keeps its first frame and its finished chunk, and the stats list both."""
    polls_per_video = 3 * (CHUNKS + 1)  # a poll per step (3 steps); the first frame is a chunk too
    stop = StopDuringSecondVideo(polls_per_video + 3 + 3 + 1)
    opts = GenerationOptions(chunks=CHUNKS, seed=5, label=1, stats=str(tmp_path / "stats.json"))
    with pytest.raises(Stopped) as stopped:
        generate_videos(checkpoint, tmp_path / "v.mp4", opts, num_videos=2, batch=1, stop=stop)
    assert_same_video(read_video(tmp_path / "v_seed5.mp4"), singles[5])
    assert read_video(video_path(tmp_path / "v.mp4", 6)).shape[1] == 1 + 2  # the first frame, one chunk of 2
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert [len(v["chunks"]) for v in stats["videos"]] == [CHUNKS, 1]
    assert stopped.value.stats["videos"][1]["stopped_by"] == "SIGTERM"


@pytest.mark.parametrize("argv, message", [
    (["--batch", "2"], "--batch needs --num-videos"),
    (["--num-videos", "2", "--seed", str(2 ** 64 - 1)], "passes the largest seed"),
])
def test_bad_many_video_options_are_one_line_before_any_work(checkpoint, tmp_path, argv, message):
    proc = subprocess.run([sys.executable, str(ROOT / "infer/long_video.py"), "--checkpoint", str(checkpoint),
                           "--out", str(tmp_path / "v.mp4"), *argv], capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_video_of_any_seed_is_refused_before_any_work(checkpoint, tmp_path):
    """The output-path checks of one video apply to each: seed 6's file exists, so nothing is written."""
    video_path(tmp_path / "v.mp4", 6).write_bytes(b"keep")
    with pytest.raises(ValueError, match="v_seed6.mp4: already exists"):
        generate_videos(checkpoint, tmp_path / "v.mp4", GenerationOptions(chunks=1, seed=5), num_videos=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v_seed6.mp4"]
