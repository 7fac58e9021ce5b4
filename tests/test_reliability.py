"""Reliability: bad input gets one clear error, faults lose nothing (see docs/reliability.md).

All CPU and seconds-scale (tiny config). Training subprocesses run with one intra-op thread (OMP_NUM_THREADS=1):
on a small shared machine that is several times faster than two contended threads, and runs that must agree bit for
bit use the same thread count. NaN/inf losses are covered in tests/test_training.py.
"""
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

import ca2vdm.data.clips as data_module
from ca2vdm.checkpoints.weights import load_model, save_weights
from ca2vdm.config import (
    ModelConfig,
    load_config,
    model_config,
    to_dict,
)
from ca2vdm.data.clips import VideoFolderDataset
from ca2vdm.errors import CheckpointError, CheckpointWriteError, ConfigError, DataError, RunLockedError
from ca2vdm.io import video as video_io
from ca2vdm.io.video import VideoWriter
from ca2vdm.training import checkpoint_dirs, run_lock
from ca2vdm.training.checkpoint_dirs import resolve_resume, step_dirs
from ca2vdm.training.loop import _lr_factor, train
from ca2vdm.training.run_files import SKIPPED_LOG
from tests.helpers import random_model, run_command

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny.yaml"
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STEPS, EVERY = 40, 4  # the reference run: 40 steps, a checkpoint every 4
FINAL = f"checkpoints/step_{STEPS:06d}"


@pytest.fixture
def one_thread():
    """In-process training with the subprocesses' thread count (bit-identical to them, and faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _overrides(shapes, out, **train):
    return [f"data.root={shapes}", f"train.output_dir={out}", "train.batch_size=2", "train.log_every=1",
            *(f"train.{k}={v}" for k, v in train.items())]


def _cli(*args):
    return [sys.executable, str(ROOT / "train/train.py"), "--config", str(TINY), "--no-progress", *args]


def _records(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory):
    """An uninterrupted CLI run: what every interrupted-and-resumed run must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(_cli(*_overrides(shapes, out, max_steps=STEPS, save_every=EVERY)), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _assert_same_run(out, reference):
    """Same loss and learning-rate sequence (bit for bit), same final EMA and raw weights."""
    got, want = _records(out), _records(reference)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert [(r["loss"], r["lr"]) for r in got] == [(r["loss"], r["lr"]) for r in want]
    for name in ("ema.safetensors", "model.safetensors"):
        a, b = load_file(Path(out) / FINAL / name), load_file(Path(reference) / FINAL / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert not list((Path(out) / "checkpoints").glob(".t*-*"))  # no temporary or trash directories left


# 1. SIGKILL in the middle of training, then --resume latest --------------------------------------------------------

def test_sigkill_then_resume_latest_equals_uninterrupted_run(shapes, reference, tmp_path):
    out = tmp_path / "run"
    args = _overrides(shapes, out, max_steps=STEPS, save_every=EVERY)
    metrics, first = out / "metrics.jsonl", out / "checkpoints/step_000004"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(_cli(*args), env=ENV, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        # Kill once a checkpoint is published and the log has gone past it (the resume must cut the log back).
        while proc.poll() is None and time.monotonic() < deadline:
            if first.is_dir() and metrics.exists() and metrics.read_text().count("\n") >= 6:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        code = proc.wait(timeout=30)
    assert code == -signal.SIGKILL, f"the run ended with {code} before it could be killed: " + \
        (tmp_path / "killed.log").read_text()[-2000:]
    assert not (out / FINAL).exists()
    latest = resolve_resume("latest", out / "checkpoints")
    with open(metrics, "a") as f:  # a kill during a log write leaves a torn last line: the worst case
        f.write('{"step": 999, "lo')

    proc = subprocess.run(_cli(*args, "--resume", "latest"), env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {latest} at step {int(latest.name[5:])}" in proc.stdout
    _assert_same_run(out, reference)


# 2. Killed or failing while writing a checkpoint ------------------------------------------------------------------

def test_failed_or_killed_checkpoint_write_loses_nothing(shapes, reference, tmp_path, monkeypatch, one_thread):
    root = tmp_path / "checkpoints"
    config = load_config(TINY, _overrides(shapes, tmp_path, max_steps=STEPS, save_every=EVERY))
    publish = checkpoint_dirs.publish

    def disk_full_at_step_8(staging, final):  # every file of step 8 is written, the rename fails
        if Path(final).name == "step_000008":
            raise OSError(28, "No space left on device")
        publish(staging, final)

    monkeypatch.setattr(checkpoint_dirs, "publish", disk_full_at_step_8)
    with pytest.raises(CheckpointWriteError, match=r"step_000008.*No space left.*step_000004 is intact"):
        train(config, progress_bar=False)
    monkeypatch.setattr(checkpoint_dirs, "publish", publish)
    assert step_dirs(root) == [root / "step_000004"]
    assert not list(root.glob(".tmp-*"))  # a failed save removes its own staging directory
    model, meta = load_model(root / "step_000004")  # the previous checkpoint is complete and loads
    assert meta.step == 4 and model.cfg.depth == 2

    # What SIGKILL during a save leaves behind: a half-written staging directory (it never gets a step_ name) ...
    stale = checkpoint_dirs.staging_dir(root / "step_000008")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 64)
    # ... and, from a copy by hand or an older version, a step_ directory with files missing.
    (root / "step_000012").mkdir()
    shutil.copy(root / "step_000004" / "ema.safetensors", root / "step_000012")
    assert resolve_resume("latest", root) == root / "step_000004"
    with pytest.raises(CheckpointError, match=r"step_000012 is incomplete \(missing optimizer.bin"):
        resolve_resume(str(root / "step_000012"), root)
    # Forgetting --resume would wipe the log and overwrite the checkpoints: refused before any work.
    with pytest.raises(CheckpointError, match=r"already holds checkpoints .* resume=latest"):
        train(config, progress_bar=False)
    # Resuming with another model config is refused with the differing key, before any work.
    changed = load_config(TINY, _overrides(shapes, tmp_path, max_steps=STEPS, save_every=EVERY) + ["model.depth=3"])
    with pytest.raises(CheckpointError, match=r"model.depth=3 \(checkpoint: 2\)"):
        train(changed, resume="latest", progress_bar=False)

    train(config, resume="latest", progress_bar=False)
    assert not stale.exists()  # cleaned by the next save
    _assert_same_run(tmp_path, reference)


# 3. One run per output directory; what a resume may change ----------------------------------------------------------

def _wait_for(condition, proc, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, f"{what} never happened (exit code {proc.poll()})"
        time.sleep(0.05)


def test_second_run_on_a_busy_output_dir_is_refused(shapes, tmp_path, one_thread, caplog):
    """A fresh start or a --resume beside a running job is refused naming its pid, before touching anything; the
    lock left by a SIGKILLed run is stale and taken over."""
    out = tmp_path / "run"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(_cli(*_overrides(shapes, out, max_steps=10_000, save_every=10_000)), env=ENV,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size, first,
                  "the first run's first logged step")
        second = load_config(TINY, _overrides(shapes, out, max_steps=2, save_every=2))
        busy = rf"train.output_dir {re.escape(str(out))} is in use by another training run \(pid {first.pid} on "
        for resume in (None, "latest"):
            with pytest.raises(RunLockedError, match=busy):
                train(second, resume=resume, progress_bar=False)
        assert "max_steps: 10000" in (out / "config.yaml").read_text()  # not the second run's
    finally:
        first.kill()
        first.wait(timeout=30)
    steps = [r["step"] for r in _records(out)]
    assert steps == list(range(1, len(steps) + 1))  # one run's log: no duplicated or interleaved lines
    assert json.loads((out / run_lock.LOCK_NAME).read_text())["pid"] == first.pid  # SIGKILL leaves the file
    with caplog.at_level("WARNING", logger="ca2vdm.checkpoint"):
        train(load_config(TINY, _overrides(shapes, out, max_steps=1, save_every=1)), progress_bar=False)
    assert f"stale lock of pid {first.pid}" in caplog.text
    assert not (out / run_lock.LOCK_NAME).exists()  # released at the end
    # A lock naming another host cannot be checked from here: refused, with how to clear it.
    (out / run_lock.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunLockedError, match=r"\(pid 1 on elsewhere, .*if that run has ended, delete "):
        run_lock.RunLock(out).acquire()


def test_resume_refuses_changed_optimizer_settings(shapes, tmp_path, one_thread):
    """A checkpoint's optimizer, schedule and EMA state were built from these settings, and the data order from seed
    and batch size: resuming with other values is refused (config.yaml would record values the run does not use).
    train.max_steps may change: the cosine schedule then follows the new length, and config.yaml records it."""
    out = tmp_path / "run"
    args = _overrides(shapes, out, max_steps=2, save_every=2, warmup_steps=1)
    train(load_config(TINY, args), progress_bar=False)
    recorded = (out / "config.yaml").read_text()
    for change in ("train.lr=0.002", "train.weight_decay=0.1", "train.warmup_steps=2", "train.seed=1",
                   "train.batch_size=4", "train.grad_accum=2", "train.ema_decay=0.9"):
        with pytest.raises(CheckpointError, match=rf"{re.escape(change)} \(checkpoint: .*rerun resume .*init_from"):
            train(load_config(TINY, [*args, change]), resume="latest", progress_bar=False)
    assert (out / "config.yaml").read_text() == recorded
    assert not (out / run_lock.LOCK_NAME).exists()  # released on errors

    train(load_config(TINY, _overrides(shapes, out, max_steps=4, save_every=2, warmup_steps=1)), resume="latest",
          progress_bar=False)
    assert OmegaConf.load(out / "config.yaml").train.max_steps == 4
    lrs = [r["lr"] for r in _records(out)]
    assert lrs[2:] == pytest.approx([1e-3 * _lr_factor(step, 1, 4) for step in (3, 4)])
    assert lrs[:2] == pytest.approx([1e-3 * _lr_factor(step, 1, 2) for step in (1, 2)])


def test_a_resumed_run_continues_with_the_settings_it_was_started_with(shapes, tmp_path, one_thread, capsys):
    """--resume latest dropped the first run's key=value overrides: a 2-step run resumed ran to the config's 40 steps
    with the config's save interval. Now it continues with its own settings (config.yaml); an override changes them
    and is named, as is a different data.root, and the YAML file's other values that differ are said to be kept."""
    out = tmp_path / "run"
    first = ["--config", TINY, "--no-progress", f"data.root={shapes}", f"train.output_dir={out}",
             "train.batch_size=2", "train.max_steps=2", "train.save_every=2", "train.warmup_steps=1"]
    assert run_command("train", *first) == 0
    capsys.readouterr()
    resume = ["--config", TINY, "--no-progress", "--resume", "latest", f"train.output_dir={out}"]
    assert run_command("train", *resume, "train.max_steps=4") == 0  # no data.root, save_every, batch size given
    line = capsys.readouterr().err.strip().splitlines()[0]
    assert line.startswith(f"resuming {out} with the settings it was started with ({out / 'config.yaml'}); changed "
                           "by this command line: train.max_steps=4 (the run's: 2); kept from the run where ")
    assert f"data.root={str(shapes)!r} ({TINY}: 'data/shapes')" in line and "train.save_every=2" in line
    assert step_dirs(out / "checkpoints")[-1].name == "step_000004" and len(_records(out)) == 4
    assert OmegaConf.load(out / "config.yaml").train.save_every == 2
    other = tmp_path / "other-data"
    shutil.copytree(shapes, other)
    assert run_command("train", *resume, "train.max_steps=6", f"data.root={other}") == 0
    assert f"data.root={str(other)!r} (the run's: {str(shapes)!r})" in capsys.readouterr().err


def test_an_output_dir_that_is_a_file_says_so(shapes, tmp_path):
    """It said 'fix the permissions of train.output_dir'."""
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ConfigError, match=rf"^train.output_dir={tmp_path / 'file'} is a file, not a folder; choose"):
        train(load_config(TINY, _overrides(shapes, tmp_path / "file", max_steps=1)), progress_bar=False)
    with pytest.raises(CheckpointWriteError, match="a part of its path is a file, not a folder: choose another"):
        train(load_config(TINY, _overrides(shapes, tmp_path / "file" / "run", max_steps=1)), progress_bar=False)
    assert (tmp_path / "file").read_text() == "mine"


def test_run_killed_in_its_first_save_says_start_fresh(shapes, tmp_path, one_thread):
    """With no complete checkpoint there is nothing to resume: --resume latest says to start fresh, and that works."""
    out = tmp_path / "run"
    root = out / "checkpoints"
    staging = checkpoint_dirs.staging_dir(root / "step_000004")  # what SIGKILL during the first save leaves
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"\0" * 64)
    config = load_config(TINY, _overrides(shapes, out, max_steps=2, save_every=2))
    with pytest.raises(CheckpointError, match=r"no complete checkpoint .*stopped while writing its first one "
                                              r"\(\.tmp-step_000004\).*start fresh: rerun without resume"):
        train(config, resume="latest", progress_bar=False)
    (root / "step_000004").mkdir()  # a partial step_ directory (copied by hand, an older version)
    with pytest.raises(CheckpointError, match=r"only incomplete checkpoints \(step_000004\).*move them away and "
                                              r"start fresh"):
        train(config, resume="latest", progress_bar=False)
    (root / "step_000004").rmdir()
    train(config, progress_bar=False)  # the advice works
    assert step_dirs(root) == [root / "step_000002"] and not staging.exists()


# 4. Data -------------------------------------------------------------------------------------------------------------

def _write_video(path, num_frames, height=16, width=16, gray=False):
    rng = np.random.default_rng(num_frames)
    frames = rng.integers(0, 255, (num_frames, height, width, 3), dtype=np.uint8)
    if gray:
        frames[...] = frames[..., :1]
    with VideoWriter(path, fps=8) as writer:
        writer.write(frames)


def test_training_skips_bad_videos_and_reports_them(shapes, tmp_path, monkeypatch, one_thread, capsys, caplog):
    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    whole = (data / "video_00000.mp4").read_bytes()
    (data / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (data / "text.mp4").write_text("not a video\n")
    (data / "empty.mp4").write_bytes(b"")
    _write_video(data / "short.mp4", 3)  # a clip needs 7 frames
    _write_video(data / "gray_odd.mp4", 12, height=23, width=17, gray=True)  # works: gray -> RGB, odd -> cropped
    (data / "notes.txt").write_text("not a video extension: ignored\n")
    read_frames = data_module.read_frames

    def fails_mid_training(path, indices):  # probes fine, then cannot be decoded (e.g. a disk error)
        if Path(path).name == "video_00003.mp4":
            raise ValueError(f"cannot decode video {path}: simulated I/O error")
        return read_frames(path, indices)

    monkeypatch.setattr(data_module, "read_frames", fails_mid_training)
    out = train(load_config(TINY, _overrides(data, tmp_path / "run", max_steps=8, save_every=8)), progress_bar=False)
    assert len(_records(out)) == 8 and (out / "checkpoints/step_000008").is_dir()  # trained across an epoch end
    report = [json.loads(line) for line in (out / SKIPPED_LOG).read_text().splitlines()]
    assert {Path(r["file"]).name for r in report} == {"truncated.mp4", "text.mp4", "empty.mp4", "short.mp4",
                                                       "video_00003.mp4"}
    reasons = {Path(r["file"]).name: r["reason"] for r in report}
    assert "too short: 3 frames" in reasons["short.mp4"] and "0 bytes" in reasons["empty.mp4"]
    assert "failed at read time" in reasons["video_00003.mp4"]
    printed = capsys.readouterr()
    assert "data: skipped 4 of 17 video files" in printed.out and "failed to decode while training" in printed.out
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "\n".join([printed.out, printed.err, logged]).count("skipped 4 of 17") == 1  # reported once, not twice


def test_class_conditional_model_without_labels_is_refused(shapes, tmp_path):
    """Without a labels manifest every video would silently get label 0."""
    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    (data / "labels.jsonl").unlink()
    with pytest.raises(DataError, match=rf"model.num_classes=3 but {re.escape(str(data))} has no labels manifest.*"
                                        r"label 0.*model.num_classes=0"):
        train(load_config(TINY, _overrides(data, tmp_path / "run", max_steps=1)), progress_bar=False)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_folder_without_usable_videos_is_one_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.png").write_bytes(b"\x89PNG")
    folder = re.escape(str(tmp_path))
    with pytest.raises(DataError, match=rf"no video files in {folder}: .*\.mp4.*a\.txt.*ca2vdm make-data"):
        VideoFolderDataset(tmp_path, num_frames=4)
    (tmp_path / "a.mp4").write_text("x")
    (tmp_path / "b.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match=rf"no usable videos in {folder}: .*skipped 2 .*a\.mp4.*b\.mp4"):
        VideoFolderDataset(tmp_path, num_frames=4)
    with pytest.raises(DataError, match="is a file; point data.root at the folder"):
        VideoFolderDataset(tmp_path / "a.txt", num_frames=4)


def test_unreadable_video_and_folder_are_named(tmp_path, monkeypatch):
    """We run as root, where chmod 000 does not stop reads: the OS error is injected where the file is opened."""
    _write_video(tmp_path / "ok.mp4", 8)
    _write_video(tmp_path / "locked.mp4", 8)

    def open_denied(path, *args, **kwargs):
        if Path(path).name == "locked.mp4":
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(video_io, "open", open_denied, raising=False)
    ds = VideoFolderDataset(tmp_path, num_frames=4, resolution=8)
    assert [p.name for p in ds.videos] == ["ok.mp4"]
    ((path, reason),) = ds.skipped
    assert path.endswith("locked.mp4") and "Permission denied" in reason and "chmod" in reason

    listdir = os.listdir

    def listdir_denied(path="."):
        if Path(path) == tmp_path:
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)

    monkeypatch.setattr(data_module.os, "listdir", listdir_denied)
    folder = re.escape(str(tmp_path))
    with pytest.raises(DataError, match=rf"cannot list video folder {folder}: Permission denied; fix its perm"):
        VideoFolderDataset(tmp_path, num_frames=4)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; covered by the injected test")
def test_unreadable_video_for_real(tmp_path):
    _write_video(tmp_path / "ok.mp4", 8)
    _write_video(tmp_path / "locked.mp4", 8)
    (tmp_path / "locked.mp4").chmod(0)
    ds = VideoFolderDataset(tmp_path, num_frames=4, resolution=8)
    assert [p.name for p in ds.videos] == ["ok.mp4"] and "Permission denied" in ds.skipped[0][1]


def _run_cli(monkeypatch, capsys, *args):
    """train/train.py as __main__ in this process (the interpreter start is most of a subprocess' cost here)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "train/train.py"), run_name="__main__")
    return info.value.code, capsys.readouterr().err


def test_cli_reports_bad_input_in_one_line(shapes, tmp_path, monkeypatch, capsys):
    """train/train.py: config errors exit 2, data and checkpoint errors exit 1; one message, no traceback, and
    nothing is written."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.yaml").write_text("train: [\n")
    out = tmp_path / "out"
    tiny = ["--config", str(TINY), "--no-progress"]
    wider = tmp_path / "wider.safetensors"  # fine-tuning from weights of another size
    save_weights(wider, random_model(hidden_size=64).state_dict(), model_config("tiny", hidden_size=64))
    cases = [  # (arguments, exit code, text the message must hold)
        ([*tiny, "train.lr=fast"], 2, "train.lr"),
        ([*tiny, "data.root=''"], 2, "data.root is required"),
        ([*tiny, "model.resolution=18"], 2, "model.resolution=18 is not divisible by model.patch_size=4"),
        ([*tiny, "model.max_context_frames=1"], 2, "model.max_context_frames=1 is shorter than a chunk"),
        (["--config", str(tmp_path / "broken.yaml")], 2, "broken.yaml is not valid YAML"),
        (["--config", str(tmp_path / "nope.yaml")], 2, "nope.yaml not found"),
        ([*tiny, f"data.root={tmp_path / 'empty'}", f"train.output_dir={out}"], 1,
         f"no video files in {tmp_path / 'empty'}"),
        ([*tiny, f"data.root={shapes}", f"train.output_dir={out}", "--resume", "latest"], 1,
         f"--resume latest: no checkpoint under {out / 'checkpoints'}"),
        ([*tiny, f"data.root={shapes}", f"train.output_dir={out}", f"train.init_from={wider}"], 1,
         f"train.init_from={wider} does not fit this model config (size mismatch"),
    ]
    for args, code, text in cases:
        got, err = _run_cli(monkeypatch, capsys, *args)
        assert got == code and text in err and err.count("error:") == 1, (args, got, err)
    assert not out.exists()  # the errors came before any work


def test_cli_data_error_in_a_real_process(tmp_path):
    proc = subprocess.run(_cli(f"data.root={tmp_path}", f"train.output_dir={tmp_path / 'out'}"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and f"error: no video files in {tmp_path}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# 6. Checkpoint loading -------------------------------------------------------------------------------------------

def test_bad_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path):
    state = random_model().state_dict()
    good = tmp_path / "good.safetensors"
    save_weights(good, state, model_config("tiny"))
    load_model(good)
    whole = good.read_bytes()
    recorded = to_dict(model_config("tiny"))

    def case(name, write, message):
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError, match=message) as info:
            load_model(path)
        assert str(path) in str(info.value), info.value

    case("missing.safetensors", lambda p: None, "not found")
    unreadable = "not a readable safetensors file|corrupt or was not written by ca2vdm"
    case("garbage.safetensors", lambda p: p.write_bytes(bytes(range(256)) * 8), unreadable)
    case("tiny_file.safetensors", lambda p: p.write_bytes(b"abc"), unreadable)
    case("json_list.safetensors", lambda p: p.write_bytes(len(b"[1]").to_bytes(8, "little") + b"[1]"),
         "corrupt or was not written by")
    case("no_metadata.safetensors", lambda p: save_file(state, str(p)), "no model_config")
    case("hf_metadata.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"}), "no model_config")
    case("truncated.safetensors", lambda p: p.write_bytes(whole[: len(whole) // 2]), "corrupt \\(truncated")
    case("config_not_dict.safetensors", lambda p: save_file(state, str(p), metadata={"model_config": "[1, 2]"}),
         "corrupt model_config")
    case("unknown_field.safetensors", lambda p: save_file(state, str(p), metadata={
        "model_config": json.dumps({**recorded, "colour": 1})}), "cannot read")
    case("invalid_config.safetensors", lambda p: save_weights(p, state, ModelConfig(**{**recorded, "resolution": 18})),
         "invalid model config")
    case("deeper.safetensors", lambda p: save_weights(p, state, model_config("tiny", depth=3)),
         r"does not match its recorded model config \(missing \['")
    case("wider.safetensors", lambda p: save_weights(p, state, model_config("tiny", hidden_size=64)),
         "does not match its recorded model config .*size mismatch")
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "nowhere"))):
        load_model(tmp_path / "nowhere")  # a missing checkpoint directory
