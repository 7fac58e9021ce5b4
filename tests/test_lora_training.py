"""LoRA fine-tuning through the training loop (ca2vdm/training/lora.py): only the adapter trains and is saved, a run
stopped by SIGTERM resumes bit for bit, the base's identity and the adapter's settings are fixed on resume, FSDP over
two processes."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ca2vdm
from ca2vdm.checkpoints.adapters import ADAPTER_NAME, checkpoint_hash, read_adapter
from ca2vdm.checkpoints.weights import load_model, save_weights
from ca2vdm.config import load_config
from ca2vdm.data.captioned import write_captioned_dataset
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.errors import CheckpointError, ConfigError
from ca2vdm.io.video import read_video
from ca2vdm.models import lora as layers
from ca2vdm.training import diffusion_task
from ca2vdm.training.loop import train
from ca2vdm.training.run_guard import Preempted

from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny.yaml"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny trained-looking base (every residual branch open, so every adapter gets gradients)."""
    model = random_model(num_classes=3)
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_weights(path, model.state_dict(), model.cfg)
    return path


def _overrides(shapes, out, base, steps, *extra):
    return [f"data.root={shapes}", f"train.output_dir={out}", f"train.init_from={base}", "train.batch_size=2",
            f"train.max_steps={steps}", "train.save_every=4", "train.log_every=1", "train.warmup_steps=2",
            "train.lora.rank=2", *extra]


def _config(shapes, out, base, steps, *extra):
    return load_config(TINY, _overrides(shapes, out, base, steps, *extra))


def _losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _same(a, b):
    a, b = load_file(a), load_file(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_only_the_adapter_gets_gradients_and_is_optimized_and_saved(shapes, base, tmp_path):
    model, _ = load_model(base)
    model = layers.for_training(model.train(), load_config(TINY, [f"train.init_from={base}", "train.lora={}"]
                                                           ).train.lora)
    adapter = layers.trainable_names(model)
    assert adapter and all(".lora_A." in n or ".lora_B." in n for n in adapter)
    x, t = torch.randn(2, 3, model.cfg.clip_frames, 16, 16), torch.rand(2, model.cfg.clip_frames)
    model(x, t, torch.tensor([0, 1])).square().mean().backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == adapter  # the base gets none

    out = train(_config(shapes, tmp_path / "run", base, 2, "train.sample_every=2"), progress_bar=False)
    final = out / "checkpoints/step_000002"
    assert read_video(out / "samples/step_000002.mp4").shape[1] == 1 + 3 * 2  # the task's sample, adapter folded in
    published = load_file(final / ADAPTER_NAME)
    shapes_of = {k.replace(".default", ""): v.shape for k, v in load_file(final / "model.safetensors").items()}
    assert shapes_of == {k: v.shape for k, v in published.items()}  # the resume state holds the adapter alone
    assert not (final / "ema.safetensors").exists()
    optimizer = torch.load(final / "optimizer.bin", weights_only=True)
    assert [len(g["params"]) for g in optimizer["param_groups"]] == [len(published)]
    assert sorted(tuple(s["exp_avg"].shape) for s in optimizer["state"].values()) == \
        sorted(tuple(v.shape) for v in published.values())
    adapter = read_adapter(final)
    assert adapter.base_sha256 == checkpoint_hash(base) and adapter.settings["rank"] == 2
    assert any(v.abs().sum() > 0 for k, v in published.items() if "lora_B" in k)  # it trained


def test_a_rank_above_the_smallest_adapted_width_is_refused_before_training(shapes, base, tmp_path):
    """train.lora.rank=10000 on a 128-wide model was accepted (a 430 MB adapter, 123x the base)."""
    model, _ = load_model(base)
    width = min(min(m.in_features, m.out_features) for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and re.fullmatch(layers.target_pattern(model, ["attention", "mlp"]),
                                                                   n))
    for rank in (width + 1, 10000):
        with pytest.raises(ConfigError, match=rf"^train.lora.rank={rank} is above the smallest width of the layers "
                                              rf"it adapts \({width}, .*set train.lora.rank <= {width}$"):
            train(_config(shapes, tmp_path / f"run{rank}", base, 2, f"train.lora.rank={rank}"), progress_bar=False)
        assert not (tmp_path / f"run{rank}" / "checkpoints").exists()
    layers.for_training(load_model(base)[0], load_config(TINY, [f"train.init_from={base}", f"train.lora.rank={width}"]
                                                         ).train.lora)  # the width itself is fine


def test_a_bf16_base_keeps_the_adapter_in_float32_and_trains_under_bf16_autocast(base):
    model, _ = load_model(base)
    lora = load_config(TINY, [f"train.init_from={base}", "train.lora.base_dtype=bf16", "train.mixed_precision=bf16"]
                       ).train.lora
    model = layers.for_training(model.train(), lora)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["stack.blocks.0.mlp.0.base_layer.weight"] == dtypes["x_embedder.weight"] == torch.bfloat16
    assert {dtypes[n] for n in layers.trainable_names(model)} == {torch.float32}
    x, t = torch.randn(1, 3, model.cfg.clip_frames, 16, 16), torch.rand(1, model.cfg.clip_frames)
    with torch.autocast("cpu", torch.bfloat16):
        loss = model(x, t, torch.tensor([2])).float().square().mean()
    loss.backward()
    assert torch.isfinite(loss) and all(model.get_parameter(n).grad is not None for n in layers.trainable_names(model))


def test_sigterm_checkpoint_and_resume_4_plus_4_equal_8_bit_for_bit(shapes, base, tmp_path, monkeypatch):
    straight = train(_config(shapes, tmp_path / "straight", base, 8, "train.save_every=8"), progress_bar=False)
    calls, loss = [], diffusion_task.DiffusionTask.loss

    def signalled_in_step_4(self, *args):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(self, *args)

    monkeypatch.setattr(diffusion_task.DiffusionTask, "loss", signalled_in_step_4)
    with pytest.raises(Preempted, match=r"stopped by SIGTERM after step 4: checkpoint \S*step_000004 saved"):
        train(_config(shapes, tmp_path / "resumed", base, 8, "train.save_every=8"), progress_bar=False)
    monkeypatch.setattr(diffusion_task.DiffusionTask, "loss", loss)
    assert (tmp_path / "resumed/checkpoints/step_000004" / ADAPTER_NAME).is_file()
    resumed = train(_config(shapes, tmp_path / "resumed", base, 8, "train.save_every=8"), resume="latest",
                    progress_bar=False)
    assert len(_losses(straight)) == 8 and _losses(straight) == _losses(resumed)
    for name in (ADAPTER_NAME, "model.safetensors"):
        assert _same(straight / "checkpoints/step_000008" / name, resumed / "checkpoints/step_000008" / name), name

    with pytest.raises(CheckpointError, match=r"train.lora=\{'rank': 3.*\(checkpoint: \{'rank': 2"):
        train(_config(shapes, tmp_path / "resumed", base, 10, "train.lora.rank=3"), resume="latest")
    with pytest.raises(CheckpointError, match=r"train.lora=None \(checkpoint: \{'rank': 2"):
        train(load_config(TINY, _overrides(shapes, tmp_path / "resumed", base, 10)[:-1]), resume="latest")


def test_a_changed_base_file_is_refused_on_resume(shapes, base, tmp_path):
    own = tmp_path / "base.safetensors"
    shutil.copy(base, own)
    train(_config(shapes, tmp_path / "run", own, 4), progress_bar=False)
    model = random_model(seed=1, num_classes=3)
    save_weights(own, model.state_dict(), model.cfg)  # same path, other weights
    with pytest.raises(CheckpointError, match=r"now holds other weights .* than the base this run's adapter"):
        train(_config(shapes, tmp_path / "run", own, 6), resume="latest", progress_bar=False)


def test_the_shipped_distilled_student_takes_an_adapter_sampled_with_its_own_steps(tmp_path):
    """LoRA on checkpoints/demo-4step.safetensors through train/train.py's task: the adapter records the student as
    its base, samples with the student's 4 guidance-free steps, and is refused on the teacher."""
    student, teacher = ROOT / "checkpoints/demo-4step.safetensors", ROOT / "checkpoints/demo.safetensors"
    write_dataset(tmp_path / "white", num_videos=4, num_frames=16, size=32, seed=0, colour=(255, 255, 255))
    config = load_config(ROOT / "configs/demo.yaml", [
        f"data.root={tmp_path / 'white'}", f"train.output_dir={tmp_path / 'run'}", f"train.init_from={student}",
        "train.batch_size=2", "train.max_steps=2", "train.save_every=2", "train.warmup_steps=1", "train.lr=3e-3",
        "data.clips_per_video=1", "data.num_workers=0", "train.lora={}"])
    adapter = train(config, progress_bar=False) / "checkpoints/step_000002"
    assert read_adapter(adapter).base_sha256 == checkpoint_hash(student)
    pipe = ca2vdm.load_pipeline(student, "cpu", lora=[(adapter, 1.0)])
    assert (pipe.settings.steps, pipe.settings.cfg_scale) == (4, 1.0)  # the student's own, not the config's 16
    first = lambda p: torch.cat([c.latents for c in p.generate(1, label=1, seed=0)], dim=2)  # noqa: E731
    assert not torch.equal(first(pipe), first(ca2vdm.load_pipeline(student, "cpu")))
    with pytest.raises(CheckpointError, match="demo-4step.safetensors .* not on .*demo.safetensors"):
        ca2vdm.load_pipeline(teacher, "cpu", lora=[(adapter, 1.0)])


def test_the_shipped_text_model_takes_an_adapter_on_its_cross_attention_and_samples_with_a_prompt(tmp_path):
    """LoRA on checkpoints/text-demo.safetensors: the default targets include the blocks' cross-attention, the
    adapter trains on captioned videos and changes what a prompt samples (the prompt's K/V made through it)."""
    base = ROOT / "checkpoints/text-demo.safetensors"
    write_captioned_dataset(tmp_path / "captioned", num_videos=4, num_frames=16, size=32, seed=0)
    config = load_config(ROOT / "configs/text-demo.yaml", [
        f"data.root={tmp_path / 'captioned'}", f"train.output_dir={tmp_path / 'run'}", f"train.init_from={base}",
        "train.batch_size=2", "train.max_steps=2", "train.save_every=2", "train.warmup_steps=1", "train.lr=3e-3",
        "data.clips_per_video=1", "data.num_workers=0", "train.lora={}"])
    adapter = train(config, progress_bar=False) / "checkpoints/step_000002"
    names = read_adapter(adapter).tensors.keys()
    assert any(".cross.kv." in n for n in names) and any(".cross.q." in n for n in names), sorted(names)[:6]
    pipe = ca2vdm.load_pipeline(base, "cpu", lora=[(adapter, 1.0)], steps=2)
    first = lambda p: torch.cat([c.latents for c in p.generate(2, prompt="a red circle", seed=0)], dim=2)  # noqa: E731
    assert not torch.equal(first(pipe), first(ca2vdm.load_pipeline(base, "cpu", steps=2)))


ACCELERATE = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _launch(launcher, shapes, out, base, steps, *extra):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *launcher, str(ROOT / "train/train.py"), "--config", str(TINY), "--no-progress",
           *_overrides(shapes, out, base, steps, "train.fsdp=true", "train.save_every=2", *extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_fsdp_two_processes_train_the_adapter_and_resume_exactly(shapes, base, tmp_path):
    """Two gloo ranks shard base and adapter; the checkpoint holds the full adapter; resumed from step 2 under
    torchrun, step 4 equals the straight run's bit for bit."""
    proc = _launch(ACCELERATE, shapes, tmp_path / "straight", base, 4)
    assert sorted(re.findall(r"rank (\d): FSDP holds", proc.stdout)) == ["0", "1"], proc.stdout[-2000:]
    shutil.copytree(tmp_path / "straight/checkpoints/step_000002", tmp_path / "resumed/checkpoints/step_000002")
    _launch(TORCHRUN, shapes, tmp_path / "resumed", base, 4, "--resume", "latest")
    final = "checkpoints/step_000004"
    for name in (ADAPTER_NAME, "model.safetensors"):
        assert _same(tmp_path / "straight" / final / name, tmp_path / "resumed" / final / name), name
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")[2:]
    assert read_adapter(tmp_path / "straight" / final).tensors.keys() == \
        {k.replace(".default", "") for k in load_file(tmp_path / "straight" / final / "model.safetensors")}


def test_a_lora_step_on_the_causal_wan_with_longlives_targets(tmp_path):
    """train.lora on arch wan with LongLive's target set (every Linear of the blocks' attention and feed-forward, 10 a
    block): only those adapters train and are saved, and the adapter, folded into the base, changes what it samples."""
    from ca2vdm.models.registry import build_model, tiny_config

    torch.manual_seed(0)
    base_model = build_model(tiny_config("wan", text_tokens=24))
    base = tmp_path / "wan.safetensors"
    save_weights(base, base_model.state_dict(), base_model.cfg)
    write_captioned_dataset(tmp_path / "captioned", num_videos=4, num_frames=16, size=16, seed=0)
    config = load_config(TINY, [
        "model.name=wan-tiny", "model.num_classes=0", "model.text_tokens=24", f"data.root={tmp_path / 'captioned'}",
        f"train.output_dir={tmp_path / 'run'}", f"train.init_from={base}", "train.batch_size=2", "train.max_steps=2",
        "train.save_every=2", "train.warmup_steps=1", "train.lr=3e-3", "data.clips_per_video=1",
        "data.num_workers=0", "train.lora.rank=2", "train.lora.targets=[longlive]"])
    adapter = train(config, progress_bar=False) / "checkpoints/step_000002"
    layers_adapted = {n.split(".lora_")[0] for n in read_adapter(adapter).tensors}
    assert len(layers_adapted) == 10 * base_model.cfg.depth and all(
        re.fullmatch(r"blocks\.\d\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2))", n)
        for n in layers_adapted), sorted(layers_adapted)
    pipe = ca2vdm.load_pipeline(base, "cpu", lora=[(adapter, 1.0)], steps=2)
    first = lambda p: torch.cat([c.latents for c in p.generate(2, prompt="a red circle", seed=0)], dim=2)  # noqa: E731
    assert not torch.equal(first(pipe), first(ca2vdm.load_pipeline(base, "cpu", steps=2)))
