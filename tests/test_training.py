import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.config import load_config
from ca2vdm.errors import ConfigError, NonFiniteLossError
from ca2vdm.training import diffusion_task as training
from ca2vdm.training import run_lock
from ca2vdm.training.checkpoint_dirs import step_dirs
from ca2vdm.training.loop import data_workers, train

ROOT = Path(__file__).resolve().parents[1]


def _config(shapes, out, extra=(), **train):
    overrides = [f"data.root={shapes}", f"train.output_dir={out}", "train.batch_size=2", "train.log_every=1",
                 *(f"train.{k}={v}" for k, v in train.items()), *extra]
    return load_config(ROOT / "configs/tiny.yaml", overrides)


def _losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [(), ("diffusion.self_rollout=0.5", "diffusion.rollout_steps=2")],
                         ids=["real-context", "self-rollout"])
def test_resume_is_exact(shapes, tmp_path, extra, monkeypatch):
    rollouts = []  # frames each self-rollout made, per run
    rollout = training.rollout_context
    monkeypatch.setattr(training, "rollout_context",
                        lambda model, video, labels, num_cond, **kw: rollouts.append(num_cond) or rollout(
                            model, video, labels, num_cond, **kw))
    full = train(_config(shapes, tmp_path / "full", extra, max_steps=8, save_every=4), progress_bar=False)
    in_full, rollouts[:] = list(rollouts), []
    half = train(_config(shapes, tmp_path / "half", extra, max_steps=4, save_every=4), progress_bar=False)
    in_first_half, rollouts[:] = list(rollouts), []
    train(_config(shapes, tmp_path / "half", extra, max_steps=8, save_every=4), resume="latest", progress_bar=False)
    assert in_first_half + rollouts == in_full  # the same rollouts, before and after the resume
    if extra:  # the resumed steps really condition on the model's own chunks
        assert any(n > 1 for n in rollouts)
    assert len(_losses(full)) == 8
    assert _losses(full) == _losses(half)  # bit-identical loss sequence
    for name in ("ema.safetensors", "model.safetensors"):
        a, b = (load_file(d / "checkpoints/step_000008" / name) for d in (full, half))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_the_loss(shapes, tmp_path):
    out = train(_config(shapes, tmp_path, max_steps=60, save_every=60, lr=2e-3, batch_size=4), progress_bar=False)
    losses = _losses(out)
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    model, meta = load_model(out / "checkpoints/step_000060")
    assert meta.step == 60 and model.cfg.num_classes == 3


def test_keep_last_and_atomic_layout(shapes, tmp_path):
    out = train(_config(shapes, tmp_path, max_steps=6, save_every=2, keep_last=2), progress_bar=False)
    assert [d.name for d in step_dirs(out / "checkpoints")] == ["step_000004", "step_000006"]
    assert not list((out / "checkpoints").glob(".tmp-*"))


def _nan_from_call(monkeypatch, first_bad_call):
    calls = []
    task_loss = training.DiffusionTask.loss  # whichever diffusion.objective it computes

    def loss(*args, **kwargs):
        calls.append(1)
        value = task_loss(*args, **kwargs)
        return value * float("nan") if len(calls) >= first_bad_call else value

    monkeypatch.setattr(training.DiffusionTask, "loss", loss)


def test_nonfinite_loss_stops_with_step_and_keeps_checkpoint(shapes, tmp_path, monkeypatch):
    _nan_from_call(monkeypatch, first_bad_call=4)
    with pytest.raises(NonFiniteLossError, match=r"at step 3; .*checkpoint \S*step_000002 is kept"):
        train(_config(shapes, tmp_path, max_steps=6, save_every=2), progress_bar=False)
    assert [d.name for d in step_dirs(tmp_path / "checkpoints")] == ["step_000002"]  # last good one kept
    load_model(tmp_path / "checkpoints/step_000002")


def test_nonfinite_loss_before_any_checkpoint_says_there_is_none(shapes, tmp_path):
    """lr=1e30 blows up on the first update: the error must not promise a checkpoint that was never written."""
    with pytest.raises(NonFiniteLossError, match=r"at step 1; .*no checkpoint was written.*without resume") as info:
        train(_config(shapes, tmp_path, max_steps=4, save_every=2, lr=1e30), progress_bar=False)
    assert "kept" not in str(info.value) and not step_dirs(tmp_path / "checkpoints")


def test_nonfinite_loss_skip_policy(shapes, tmp_path, monkeypatch):
    _nan_from_call(monkeypatch, first_bad_call=3)
    out = train(_config(shapes, tmp_path, max_steps=4, save_every=4, nonfinite="skip"), progress_bar=False)
    model, _ = load_model(out / "checkpoints/step_000004")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unknown_config_key_is_reported(shapes, tmp_path):
    with pytest.raises(ConfigError, match="lrr"):
        load_config(ROOT / "configs/tiny.yaml", ["train.lrr=1"])
    proc = subprocess.run([sys.executable, str(ROOT / "train/train.py"), "--config", str(ROOT / "configs/tiny.yaml"),
                           "train.lrr=1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "lrr" in proc.stderr


def _launch_two_ranks(shapes, out) -> subprocess.CompletedProcess:
    """accelerate launch --multi_gpu --num_processes 2 on a CPU machine: two gloo ranks, 3 steps."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(ROOT / "train/train.py"), "--config", str(ROOT / "configs/tiny.yaml"), "--no-progress",
           f"data.root={shapes}", f"train.output_dir={out}", "train.batch_size=2", "train.max_steps=3",
           "train.save_every=3", "train.log_every=1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_on_cpu(shapes, tmp_path):
    """Two gloo ranks train on different clips and write one log and one checkpoint."""
    proc = _launch_two_ranks(shapes, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = re.findall(r"rank (\d) of world size 2 [^[]*starts with \[([\d, ]+)\]", proc.stdout)  # lines may interleave
    assert sorted(r for r, _ in ranks) == ["0", "1"], proc.stdout[-2000:]
    shards = [set(map(int, idx.split(","))) for _, idx in ranks]
    assert not shards[0] & shards[1]  # the ranks train on different clips
    assert len(_losses(tmp_path)) == 3  # one log, written by the main rank only
    assert [d.name for d in step_dirs(tmp_path / "checkpoints")] == ["step_000003"]
    assert len(list((tmp_path / "checkpoints/step_000003").glob("random_states_*.pkl"))) == 2
    assert proc.stdout.count("done:") == 1  # the run's last line, once (not once per rank)
    assert "cpu:0" not in proc.stdout  # the ranks share the CPU; accelerate names it cpu:0 on both
    assert "warning: accelerate launch" not in proc.stderr  # the launch started the processes it asked for


def test_a_resumed_run_names_the_epoch_it_is_in(shapes, tmp_path, capsys):
    """12 clips in batches of 2 make 6 steps an epoch: resumed after step 7, the run is one batch into epoch 1."""
    train(_config(shapes, tmp_path, max_steps=7, save_every=7), progress_bar=False)
    capsys.readouterr()
    train(_config(shapes, tmp_path, max_steps=8, save_every=7), resume="latest", progress_bar=False)
    printed = capsys.readouterr().out
    assert "epoch 1 (resuming at batch 1) starts with [" in printed and "epoch 0" not in printed, printed


def test_busy_output_dir_stops_every_rank(shapes, tmp_path):
    """Only the main rank takes the output directory's lock, but every rank stops with the same one-line error."""
    with run_lock.RunLock(tmp_path):  # another run (this process) holds train.output_dir
        proc = _launch_two_ranks(shapes, tmp_path)
        assert json.loads((tmp_path / run_lock.LOCK_NAME).read_text())["pid"] == os.getpid()  # still the holder's
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 2, proc.stderr[-3000:]
    assert all(f"{tmp_path} is in use by another training run (pid {os.getpid()} on " in e for e in errors), errors
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()


def test_periodic_sample_video(shapes, tmp_path):
    from ca2vdm.io.video import read_video

    out = train(_config(shapes, tmp_path, max_steps=2, save_every=2, sample_every=2), progress_bar=False)
    video = read_video(out / "samples/step_000002.mp4")
    assert video.shape[1] == 1 + 3 * 2  # first frame + 3 chunks of the tiny model's 2 frames


def test_every_trainer_writes_its_samples_through_one_writer(tmp_path):
    """write_sample: the pieces in order into out/samples/step_NNNNNN.mp4 at 8 fps, replacing that step's sample."""
    import av

    from ca2vdm.io.video import read_video
    from ca2vdm.training.samples import write_sample

    pieces = [np.full((n, 16, 16, 3), 40 * k, np.uint8) for k, n in enumerate((1, 2, 2), start=1)]
    path = write_sample(iter(pieces), tmp_path, 7)
    assert path == tmp_path / "samples/step_000007.mp4"
    brightness = ((read_video(path) + 1) * 127.5).mean(dim=(0, 2, 3))  # per frame
    assert brightness.tolist() == pytest.approx([40, 80, 80, 120, 120], abs=3)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 8
    write_sample(iter(pieces[:1]), tmp_path, 7)  # a resumed run samples the step again
    assert read_video(path).shape[1] == 1


def test_every_train_seed_gives_step_seeds_torch_takes():
    """train.seed is declared up to 2**32 - 1 (numpy's seeds, which accelerate's set_seed sets); the step seeds made
    from it stay below 2**64 (torch's), unchanged for the seeds that fitted before."""
    from ca2vdm.config.training import TRAIN_SEED_MAX
    from ca2vdm.training.loop import _step_seed

    assert _step_seed(3, 5, 1, 1) == ((3 * 1_000_003 + 5) * 131 + 1) * 1009 + 1
    torch.Generator().manual_seed(_step_seed(TRAIN_SEED_MAX, 10**6, 3, 7))
    assert load_config(ROOT / "configs/tiny.yaml", [f"train.seed={TRAIN_SEED_MAX}"]).train.seed == TRAIN_SEED_MAX
    with pytest.raises(ConfigError, match=rf"train.seed must be a whole number in \[0, {TRAIN_SEED_MAX}\], got "):
        load_config(ROOT / "configs/tiny.yaml", [f"train.seed={TRAIN_SEED_MAX + 1}"])


def test_data_workers_auto_is_none_on_the_cpu_and_explicit_values_win(monkeypatch):
    """-1 (the default) gives no decoding workers when the model trains on the CPU (they would take its cores), a
    share of the cores on a GPU; an explicit count is kept; below -1 is a config error."""
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert load_config(ROOT / "configs/tiny.yaml").data.num_workers == -1
    assert data_workers(-1, torch.device("cpu"), 1) == 0
    assert data_workers(-1, torch.device("cuda"), 1) == 8
    assert data_workers(-1, torch.device("cuda"), 4) == 3
    assert data_workers(2, torch.device("cpu"), 1) == 2
    with pytest.raises(ConfigError, match=r"data.num_workers must be a whole number >= -1 \(-1: auto\), got -2"):
        load_config(ROOT / "configs/tiny.yaml", ["data.num_workers=-2"])


def test_training_with_sinks_records_them_and_generates_past_the_window(shapes, tmp_path):
    """model.sink_frames travels through training (clips laid out with the sinks, all-chunk objective) into the
    checkpoint, and the trained model generates past the window with the sink kept."""
    from ca2vdm.sampling.pipeline import LongVideoPipeline

    config = load_config(ROOT / "configs/tiny.yaml", [
        f"data.root={shapes}", f"train.output_dir={tmp_path}", "train.batch_size=2", "train.max_steps=3",
        "train.save_every=3", "model.sink_frames=1", "diffusion.objective=all"])
    out = train(config, progress_bar=False)
    model, _ = load_model(out / "checkpoints/step_000003")
    assert model.cfg.sink_frames == 1
    pipe = LongVideoPipeline(model, steps=2)
    state = pipe.start(label=0, seed=0)
    for _ in range(6):  # 11 frames through a window of 5
        assert torch.isfinite(pipe.next_chunk(state).frames).all()
    assert state.conditioning.cache.sink_frames == 1 and state.conditioning.cache.frames_committed == 11


def test_checkpoint_files_follow_the_umask(shapes, tmp_path):
    """Under umask 022 every file of a run is 0644: ema.safetensors and accelerate's model.safetensors included
    (safetensors creates its files 0600)."""
    umask = os.umask(0o022)
    try:
        out = train(_config(shapes, tmp_path, max_steps=2, save_every=2), progress_bar=False)
    finally:
        os.umask(umask)
    modes = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert "checkpoints/step_000002/ema.safetensors" in modes and "checkpoints/step_000002/model.safetensors" in modes
    assert set(modes.values()) == {"0o644"}, modes
