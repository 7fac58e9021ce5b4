"""``ca2vdm encode-latents`` at scale: shards written as they fill (flat memory), resume after a kill without
encoding finished shards again, a folder of the user's own files never written into, several processes merged
into one index."""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.config import CodecConfig
from ca2vdm.data import latent_encoding
from ca2vdm.data.latent_encoding import encode_folder
from ca2vdm.data.latents import INDEX_NAME, LatentClipDataset
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.encoders.codec import build_codec
from ca2vdm.errors import DataError

from helpers import ca2vdm_command, checkout_env, save_tiny_autoencoder

ROOT = Path(__file__).resolve().parents[1]
ENCODE = ca2vdm_command("encode-latents")  # python -m ca2vdm.cli.main encode-latents
VIDEOS = 150  # for the SIGTERM test: far more than are encoded before the signal arrives


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Six labelled 16x16 videos of 12 frames and a tiny autoencoder (factor 2): 6 KiB of latents a video."""
    root = tmp_path_factory.mktemp("enc")
    write_dataset(root / "videos", num_videos=6, num_frames=12, size=16, seed=0)
    save_tiny_autoencoder(root / "ae")
    return root / "videos", build_codec(CodecConfig(kind="diffusers", path=str(root / "ae")))


def _encode(videos, out, **kw):
    return encode_folder(videos[0], out, videos[1], pixel_resolution=16, progress=False, **kw)


def _latents(out):
    """Every video's latents by file name."""
    index = json.loads((out / INDEX_NAME).read_text())
    return {v["file"]: load_file(out / v["shard"])[v["key"]] for v in index["videos"]}


def test_a_folder_with_the_users_files_is_never_written_into(videos, tmp_path):
    mine = tmp_path / "out" / "shard_00000.safetensors"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own shard")
    with pytest.raises(DataError, match="already holds files this tool did not write .*shard_00000.safetensors"):
        _encode(videos, tmp_path / "out")
    assert mine.read_bytes() == b"the user's own shard" and sorted(mine.parent.iterdir()) == [mine]
    with pytest.raises(DataError, match="did not write"):  # --resume does not make it ours either
        _encode(videos, tmp_path / "out", resume=True)
    assert sorted(mine.parent.iterdir()) == [mine]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert len(_encode(videos, tmp_path / "empty")["videos"]) == 6


def test_kill_then_resume_encodes_only_the_unfinished_shards(videos, tmp_path, monkeypatch):
    """One video per shard; killed while encoding the 4th: three shards are journalled. The resume encodes the other
    three only, cleans what the kill left, and ends with the index and latents of an uninterrupted run."""
    straight = tmp_path / "straight"
    _encode(videos, straight, shard_bytes=1)
    calls = []
    encode = latent_encoding.encode_video

    def killed_at_fourth(*args):
        calls.append(args[1].name)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the kill
        return encode(*args)

    monkeypatch.setattr(latent_encoding, "encode_video", killed_at_fourth)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _encode(videos, out, shard_bytes=1)
    assert not (out / INDEX_NAME).exists() and len(list(out.glob("shard_*.safetensors"))) == 3
    (out / ".shard_0-00003.safetensors.tmp").write_bytes(b"half a shard")  # a kill inside save_file
    with open(out / ".journal-0.jsonl", "a") as f:
        f.write('{"shard": "shard_0-00003.safe')  # a kill inside the journal write
    with pytest.raises(DataError, match="unfinished encoding .* pass resume "):
        _encode(videos, out, shard_bytes=1)
    with pytest.raises(DataError, match="started with other settings: pixel_resolution=32"):
        encode_folder(videos[0], out, videos[1], pixel_resolution=32, progress=False, resume=True)

    done, calls[:] = calls[:3], []
    monkeypatch.setattr(latent_encoding, "encode_video", lambda *a: calls.append(a[1].name) or encode(*a))
    index = _encode(videos, out, shard_bytes=1, resume=True)
    assert len(calls) == 3 and not set(calls) & set(done)  # finished shards are not encoded again
    assert index == json.loads((straight / INDEX_NAME).read_text())
    got, want = _latents(out), _latents(straight)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in straight.iterdir())  # no leftovers
    assert len(LatentClipDataset(out, num_frames=5)) == 6


def test_shards_fill_to_the_size_bound_and_are_readable_by_everyone(videos, tmp_path):
    """4 x 12 x 8 x 8 float16 = 6 KiB a video: a 12 KiB bound gives 3 shards of 2 videos, mode 0644 under umask
    022 (safetensors itself creates 0600)."""
    umask = os.umask(0o022)
    try:
        index = _encode(videos, tmp_path / "out", shard_bytes=12 * 2 ** 10)
    finally:
        os.umask(umask)
    shards = [v["shard"] for v in index["videos"]]
    assert shards == [f"shard_0-0000{i // 2}.safetensors" for i in range(6)]
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").iterdir()} == {"0o644"}


def _peak_rss_kib(config: Path, data: Path, out: Path) -> tuple[int, str]:
    """Peak RSS of ``ca2vdm encode-latents`` run in a fresh interpreter, and what it printed to stderr."""
    code = ("import resource, sys; from ca2vdm.cli.main import main; main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", code, "encode-latents", "--config", str(config), "--out", str(out),
                             "--shard-size", "4MB", "--device", "cpu", f"data.root={data}", "model.resolution=128",
                             "model.num_classes=0"], capture_output=True, text=True, timeout=300,
                            env=checkout_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip().splitlines()[-1]), result.stderr


def test_memory_is_flat_in_the_number_of_videos(tmp_path):
    """Pixel latents of a 40-frame 128x128 video are 3.9 MB: 40 videos held to the end would add 157 MB. Peak RSS
    of 40 videos stays within 1.2x of 4 videos (measured in a fresh process each); the bar shows videos/s."""
    write_dataset(tmp_path / "one", num_videos=1, num_frames=40, size=128, seed=0)
    video = next((tmp_path / "one").glob("*.mp4"))
    for count in (4, 40):
        (tmp_path / str(count)).mkdir()
        for i in range(count):
            shutil.copy(video, tmp_path / str(count) / f"v{i:02d}.mp4")
    small, err = _peak_rss_kib(ROOT / "configs/tiny.yaml", tmp_path / "4", tmp_path / "out4")
    large, _ = _peak_rss_kib(ROOT / "configs/tiny.yaml", tmp_path / "40", tmp_path / "out40")
    print(f"peak RSS: 4 videos {small} KiB, 40 videos {large} KiB ({large / small:.3f}x)")
    assert large <= 1.2 * small, (small, large)
    assert "video/s" in err and "4/4" in err
    index = json.loads((tmp_path / "out40" / INDEX_NAME).read_text())
    assert len(index["videos"]) == 40 and len({v["shard"] for v in index["videos"]}) == 20  # 3.75 MiB each: 2 a shard


def test_two_processes_split_the_videos_and_merge_one_index(videos, tmp_path):
    """accelerate launch with 2 CPU processes: each encodes its share into its own shards; the merged index lists
    every video once, in order, with the latents a single process writes."""
    ae = videos[1].config.path
    single = tmp_path / "single"
    _encode(videos, single)
    env = checkout_env(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "ca2vdm.cli.main", "encode-latents", "--config", str(ROOT / "configs/tiny.yaml"), "--out",
           str(tmp_path / "two"), "--no-progress", f"data.root={videos[0]}", "codec.kind=diffusers", f"codec.path={ae}",
           "model.in_channels=4", "model.resolution=8", "model.patch_size=2"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote 6 videos") == 1  # printed by the main process only
    index = json.loads((tmp_path / "two" / INDEX_NAME).read_text())
    assert [v["shard"] for v in index["videos"]] == ["shard_0-00000.safetensors", "shard_1-00000.safetensors"] * 3
    assert [v["file"] for v in index["videos"]] == [v["file"] for v in json.loads((single / INDEX_NAME).read_text())[
        "videos"]]
    got, want = _latents(tmp_path / "two"), _latents(single)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_sigterm_finishes_the_video_closes_the_shard_and_prints_the_resume_command(tmp_path):
    """The README's command given SIGTERM mid-run (here once its bar shows 3 videos done): the video in progress is
    finished, the shard closed and journalled, and one line prints the --resume command; that command encodes only
    the rest."""
    write_dataset(tmp_path / "videos", num_videos=VIDEOS, num_frames=8, size=16, seed=0)
    cmd = [*ENCODE, "--config", str(ROOT / "configs/tiny.yaml"), "--out", str(tmp_path / "out"),
           "--device", "cpu", f"data.root={tmp_path / 'videos'}", "model.resolution=16", "model.num_classes=0"]
    env = checkout_env(OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120  # a liveness bound for the start-up on a busy machine
    while not re.search(rf"\| *([3-9]|\d\d+)/{VIDEOS}", "".join(seen)):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(seen)[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    reader.join(timeout=30)
    last = "".join(seen).strip().splitlines()[-1]
    match = re.fullmatch(rf"stopped by SIGTERM: (\d+) of {VIDEOS} videos encoded, their shards closed in "
                         rf"{re.escape(str(tmp_path / 'out'))}; continue with: (.*)", last)
    assert match, last
    kept = int(match.group(1))
    journalled = [v["index"] for line in (tmp_path / "out" / ".journal-0.jsonl").read_text().splitlines()
                  for v in json.loads(line)["videos"]]
    assert 3 <= kept < VIDEOS and journalled == list(range(kept)) and not (tmp_path / "out" / INDEX_NAME).exists()
    again = shlex.split(match.group(2))
    assert again[1:] == [*cmd[1:], "--resume"]  # -m ca2vdm.cli.main encode-latents ARGS --resume
    result = subprocess.run([sys.executable, *again[1:], "--no-progress"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    index = json.loads((tmp_path / "out" / INDEX_NAME).read_text())
    assert [v["file"] for v in index["videos"]] == [f"video_{i:05d}.mp4" for i in range(VIDEOS)]
