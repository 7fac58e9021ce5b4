"""ca2vdm/parallelize.py (activation checkpointing, FSDP2) and its training-side state (ca2vdm/ema.py,
ca2vdm/sharded_state.py); trackers (ca2vdm/trackers.py). FSDP runs 2 gloo processes on the CPU, the same sharding
code that runs on GPUs."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.config import load_config
from ca2vdm.errors import CheckpointError, ConfigError
from ca2vdm.models.dit import CausalVideoDiT
from ca2vdm.models.registry import build_model
from ca2vdm.training import trackers
from ca2vdm.training.loop import train
from ca2vdm.training.losses import teacher_forcing_flow_loss
from ca2vdm.training.parallelize import parallelize
from tests.helpers import random_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny.yaml"


def _loss_and_grads(model, video, labels):
    loss = teacher_forcing_flow_loss(model, video, labels, model.cfg.layout.clip_chunks(model.cfg.clip_frames), 0.05,
                                     generator=torch.Generator().manual_seed(3))
    loss.backward()
    return loss.detach(), {k: p.grad for k, p in model.named_parameters()}


def test_activation_checkpointing_recomputes_blocks_with_identical_loss_and_gradients():
    """Each block runs again in the backward pass, and the loss and every gradient are bit-identical to no
    checkpointing; parameter names (so state dicts and checkpoints) are unchanged."""
    video = torch.randn(2, 3, 7, 16, 16, generator=torch.Generator().manual_seed(0))  # (B, C, T, H, W)
    labels = torch.tensor([0, 2])
    results, mlp_calls = [], []
    for checkpointing in (False, True):
        model = random_model(seed=1).train()
        config = load_config(TINY, [f"train.activation_checkpointing={str(checkpointing).lower()}"])
        names = list(model.state_dict())
        parallelize(model, config, torch.device("cpu"))
        assert list(model.state_dict()) == names
        calls = []
        for block in model.repeated_blocks():
            block.mlp.register_forward_hook(lambda *_: calls.append(1))
        results.append(_loss_and_grads(model, video, labels))
        mlp_calls.append(len(calls))
    depth = len(model.repeated_blocks())
    assert mlp_calls == [depth, 2 * depth]  # recomputed in the backward pass
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert torch.equal(loss_off, loss_on)
    assert grads_off.keys() == grads_on.keys()
    assert all(torch.equal(grads_off[k], grads_on[k]) for k in grads_off)


def test_fsdp_in_one_process_is_one_clear_error(shapes, tmp_path):
    config = load_config(TINY, [f"data.root={shapes}", f"train.output_dir={tmp_path}", "train.fsdp=true"])
    with pytest.raises(ConfigError, match=r"single process; launch with `accelerate launch --multi_gpu"):
        train(config, progress_bar=False)
    assert not (tmp_path / "checkpoints").exists()


def test_resume_cannot_switch_fsdp(shapes, tmp_path):
    """A sharded run's optimizer state is saved in another form: train.fsdp is fixed on resume, before any work."""
    overrides = [f"data.root={shapes}", f"train.output_dir={tmp_path}", "train.batch_size=2", "train.max_steps=1",
                 "train.save_every=1"]
    train(load_config(TINY, overrides), progress_bar=False)
    with pytest.raises(CheckpointError, match=r"train.fsdp=True \(checkpoint: False\)"):
        train(load_config(TINY, [*overrides, "train.max_steps=2", "train.fsdp=true"]), resume="latest",
              progress_bar=False)


@pytest.mark.parametrize("overrides, message", [
    (["train.log_with=mlflow"], "train.log_with must be one of none, tensorboard, wandb"),
    (["train.fsdp=true", "train.mixed_precision=fp16"], "train.fsdp=true does not take train.mixed_precision=fp16"),
    (["train.fsdp=true", "diffusion.self_rollout=0.5"], "train.fsdp=true does not take diffusion.self_rollout"),
])
def test_bad_scaling_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(TINY, ["data.root=x", *overrides])


ACCELERATE = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _launch(shapes, out, steps, *extra, launcher=ACCELERATE):
    """Two gloo ranks on the CPU (accelerate launch --multi_gpu --num_processes 2, or torchrun), tiny config."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *launcher, str(ROOT / "train/train.py"), "--config", str(TINY), "--no-progress",
           f"data.root={shapes}",
           f"train.output_dir={out}", "train.batch_size=2", f"train.max_steps={steps}", "train.save_every=4",
           "train.log_every=1", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_fsdp_two_processes_shard_resume_exactly_and_match_ddp(shapes, tmp_path):
    """train.fsdp=true on 2 processes: each rank holds half of the block parameters; 8 steps straight equal 4 steps +
    --resume latest + 4 (losses, raw weights, EMA), here with activation checkpointing and the resume under torchrun;
    the losses equal an unsharded (DDP) 2-process run within float tolerance; the checkpoint is full safetensors that
    one process loads."""
    proc = _launch(shapes, tmp_path / "full", 8, "train.fsdp=true")
    held = {int(r): (int(n), int(t)) for r, n, t in re.findall(r"rank (\d): FSDP holds (\d+) of (\d+) block",
                                                                proc.stdout)}
    assert sorted(held) == [0, 1], proc.stdout[-2000:]
    assert all(abs(n - t / 2) <= 0.05 * t for n, t in held.values())  # about half each (dim-0 shards)
    assert sum(n for n, _ in held.values()) == held[0][1]
    scaled = ("train.fsdp=true", "train.activation_checkpointing=true")
    _launch(shapes, tmp_path / "half", 4, *scaled)
    _launch(shapes, tmp_path / "half", 8, *scaled, "--resume", "latest", launcher=TORCHRUN)
    full, half = _losses(tmp_path / "full"), _losses(tmp_path / "half")
    assert len(full) == 8 and full == half
    for name in ("ema.safetensors", "model.safetensors"):
        a, b = (load_file(tmp_path / run / "checkpoints/step_000008" / name) for run in ("full", "half"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    fresh = CausalVideoDiT(load_config(TINY).model).state_dict()
    for name in ("ema.safetensors", "model.safetensors"):  # full tensors, not one rank's shards
        weights = load_file(tmp_path / "full/checkpoints/step_000008" / name)
        assert weights.keys() == fresh.keys() and all(weights[k].shape == fresh[k].shape for k in fresh), name
    load_model(tmp_path / "full/checkpoints/step_000008")  # one process, no FSDP
    _launch(shapes, tmp_path / "ddp", 4)
    assert _losses(tmp_path / "ddp") == pytest.approx(full[:4], rel=1e-4, abs=1e-6)


def test_tensorboard_tracker_logs_what_metrics_jsonl_logs(shapes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_config(TINY, [f"data.root={shapes}", f"train.output_dir={tmp_path}", "train.batch_size=2",
                                "train.max_steps=3", "train.save_every=3", "train.log_with=tensorboard"])
    train(config, progress_bar=False)
    events = EventAccumulator(str(tmp_path / "logs" / trackers.PROJECT)).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [(r["step"], pytest.approx(r["loss"])) for r in records] and len(logged) == 3
    assert [e.step for e in events.Scalars("lr")] == [1, 2, 3]


def test_wandb_without_the_package_is_one_clear_error(shapes, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    config = load_config(TINY, [f"data.root={shapes}", f"train.output_dir={tmp_path}", "train.log_with=wandb"])
    with pytest.raises(ConfigError,
                       match=r'needs the wandb package, which is not installed: pip install -e "\.\[wandb\]"'):
        train(config, progress_bar=False)
    assert not tmp_path.joinpath("checkpoints").exists()


def test_fsdp_two_processes_shard_the_causal_wan(tmp_path):
    """arch wan under train.fsdp=true with activation checkpointing on 2 processes: each rank holds half of diffusers'
    Wan blocks, the run trains, and its checkpoint is full tensors one process loads (exact resume of arch wan:
    tests/test_model_conformance.py)."""
    from ca2vdm.data.captioned import write_captioned_dataset

    data = tmp_path / "captioned"
    write_captioned_dataset(data, num_videos=4, num_frames=16, size=16, seed=0)
    proc = _launch(data, tmp_path, 2, "model.name=wan-tiny", "model.num_classes=0", "model.text_tokens=24",
                   "train.fsdp=true", "train.activation_checkpointing=true", "train.save_every=2", "data.num_workers=0")
    held = {int(r): (int(n), int(t)) for r, n, t in re.findall(r"rank (\d): FSDP holds (\d+) of (\d+) block",
                                                                proc.stdout)}
    assert sorted(held) == [0, 1] and sum(n for n, _ in held.values()) == held[0][1], proc.stdout[-2000:]
    assert all(abs(n - t / 2) <= 0.05 * t for n, t in held.values())
    losses = _losses(tmp_path)
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
    model, _ = load_model(tmp_path / "checkpoints/step_000002")
    fresh = build_model(model.cfg).state_dict()
    weights = load_file(tmp_path / "checkpoints/step_000002/ema.safetensors")
    assert model.cfg.arch == "wan"
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in fresh.items()}
