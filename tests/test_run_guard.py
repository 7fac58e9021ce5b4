"""Preemption (ca2vdm/run_guard.py): SIGTERM / SIGUSR1 stop a run after the current step with a checkpoint, the
lock released, one line and exit code 128 + signal; --resume latest then equals an uninterrupted run.

The runs stay inside the learning-rate warm-up (train.warmup_steps=1000), where the schedule does not depend on
train.max_steps: a run can then be started long (so the signal surely arrives mid-run) and resumed to a short end.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.config import AutoencoderTrainingConfig, load_config
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.training import checkpoint_dirs, run_lock
from ca2vdm.training import loop as training
from ca2vdm.training.autoencoder import AutoencoderTask
from ca2vdm.training.checkpoint_dirs import step_dirs
from ca2vdm.training.run_guard import Preempted

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STEPS = 10


def _args(shapes, out, max_steps, save_every=10_000):
    return [f"data.root={shapes}", f"train.output_dir={out}", "train.batch_size=2", "train.log_every=1",
            "train.warmup_steps=1000", f"train.max_steps={max_steps}", f"train.save_every={save_every}"]


def _cli(*args):
    return [sys.executable, str(ROOT / "train/train.py"), "--config", str(ROOT / "configs/tiny.yaml"), "--no-progress",
            *args]


def _records(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _signal_after_first_step(cmd, out, send):
    """Start ``cmd`` and call ``send(proc)`` as soon as the run has logged its first step (the run is long, so that is
    mid-run); (exit code, stdout, stderr). Whatever is left of the run is killed at the end."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics, deadline = Path(out) / "metrics.jsonl", time.monotonic() + 180
    try:
        while not (metrics.exists() and metrics.stat().st_size):
            assert proc.poll() is None and time.monotonic() < deadline, f"no step logged (exit code {proc.poll()})"
            time.sleep(0.005)
        send(proc)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stdout, stderr


def _same_weights(a, b):
    a, b = load_file(a), load_file(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_saves_the_current_step_and_resume_is_exact(shapes, tmp_path):
    reference = subprocess.run(_cli(*_args(shapes, tmp_path / "reference", STEPS)), env=ENV, capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "run"
    code, stdout, stderr = _signal_after_first_step(_cli(*_args(shapes, out, 100_000)), out,
                                                    lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    step = len(_records(out))  # the step the run was in when the signal came, logged and then saved
    assert 1 <= step < STEPS and [r["step"] for r in _records(out)] == list(range(1, step + 1))
    saved = out / f"checkpoints/step_{step:06d}"
    assert step_dirs(out / "checkpoints") == [saved] and not checkpoint_dirs.missing_files(saved)
    assert not (out / run_lock.LOCK_NAME).exists() and not list((out / "checkpoints").glob(".t*-*"))
    line = f"stopped by SIGTERM after step {step}: checkpoint {saved} saved; continue with --resume latest"
    assert [e for e in stderr.splitlines() if e.strip()] == [line] and "Traceback" not in stdout + stderr

    resumed = subprocess.run(_cli(*_args(shapes, out, STEPS), "--resume", "latest"), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [(r["step"], r["loss"], r["lr"]) for r in _records(out)] == \
        [(r["step"], r["loss"], r["lr"]) for r in _records(tmp_path / "reference")]
    final = f"checkpoints/step_{STEPS:06d}"
    for name in ("ema.safetensors", "model.safetensors"):
        assert _same_weights(out / final / name, tmp_path / "reference" / final / name), name


def test_sigusr1_stops_the_autoencoder_too_and_resume_is_exact(tmp_path, monkeypatch):
    """Same loop: SIGUSR1 (a cluster's warning ahead) during step 2 of the autoencoder; in-process."""
    data = tmp_path / "data"
    write_dataset(data, num_videos=8, num_frames=6, size=16, seed=0)

    def config(out, max_steps):
        overrides = [f"data.root={data}", f"train.output_dir={out}", f"train.max_steps={max_steps}",
                     "train.save_every=4"]
        return load_config(ROOT / "configs/ae-tiny.yaml", overrides, AutoencoderTrainingConfig)

    straight = training.train(config(tmp_path / "a", 4), progress_bar=False, task_type=AutoencoderTask)
    calls, loss = [], AutoencoderTask.loss

    def signalled_in_step_2(self, *args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return loss(self, *args)

    monkeypatch.setattr(AutoencoderTask, "loss", signalled_in_step_2)
    with pytest.raises(Preempted, match=r"stopped by SIGUSR1 after step 2: checkpoint \S*step_000002 saved") as info:
        training.train(config(tmp_path / "b", 4), progress_bar=False, task_type=AutoencoderTask)
    assert info.value.exit_code == 128 + signal.SIGUSR1 and len(calls) == 2  # step 3 never started
    assert step_dirs(tmp_path / "b/checkpoints") == [tmp_path / "b/checkpoints/step_000002"]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.setattr(AutoencoderTask, "loss", loss)
    resumed = training.train(config(tmp_path / "b", 4), resume="latest", progress_bar=False,
                             task_type=AutoencoderTask)
    final = "checkpoints/step_000004/ema.safetensors"
    assert _same_weights(straight / final, resumed / final)


def _rank_pid(launcher: int, rank: int) -> int:
    """The process of ``rank`` among the children of the ``accelerate launch`` process ``launcher``."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = re.search(r"^PPid:\s*(\d+)", (proc / "status").read_text(), re.M)
            if parent and int(parent.group(1)) == launcher and \
                    f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # a process that ended meanwhile
            continue
    raise AssertionError(f"no rank {rank} process under pid {launcher}")


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(shapes, tmp_path):
    """SIGTERM to rank 1 only: both ranks save the same step (each writes its RNG state into it) and stop."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           *_cli(*_args(shapes, tmp_path, 100_000))[1:]]
    code, stdout, stderr = _signal_after_first_step(cmd, tmp_path,
                                                    lambda proc: os.kill(_rank_pid(proc.pid, 1), signal.SIGTERM))
    assert code != 0
    step = len(_records(tmp_path))
    saved = tmp_path / f"checkpoints/step_{step:06d}"
    assert step_dirs(tmp_path / "checkpoints") == [saved] and not checkpoint_dirs.missing_files(saved), stderr[-3000:]
    assert sorted(p.name for p in saved.glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert len(re.findall(rf"stopped by SIGTERM after step {step}: checkpoint", stderr)) == 1  # the main rank's line
    # and it says what the launcher's ChildFailedError report, printed after it, means
    said = stderr.index("the launcher's ChildFailedError report below is this stop: exitcode 143 means the "
                        "checkpoint was saved, nothing failed")
    assert said < stderr.index("ChildFailedError", said + 30)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()
