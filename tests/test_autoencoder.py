import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.config import AutoencoderTrainingConfig, CodecConfig, load_config
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.encoders.codec import build_codec
from ca2vdm.errors import CheckpointError, ConfigError
from ca2vdm.training.autoencoder import EXPORT_DIR, AutoencoderTask, build_autoencoder
from ca2vdm.training.checkpoint_dirs import step_dirs
from ca2vdm.training.loop import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_shapes(tmp_path_factory):
    """8 short videos (6 frames): the autoencoder trains on frames, so clips need not be long."""
    root = tmp_path_factory.mktemp("short_shapes")
    write_dataset(root, num_videos=8, num_frames=6, size=16, seed=0)
    return root


def _config(short_shapes, out, *overrides):
    return _load([f"data.root={short_shapes}", f"train.output_dir={out}", *overrides])


def _load(overrides):
    return load_config(ROOT / "configs/ae-tiny.yaml", overrides, AutoencoderTrainingConfig)


def test_resume_is_exact_and_every_checkpoint_exports_a_codec(short_shapes, tmp_path):
    """Stopped after step 2 (inside the warm-up, where max_steps does not change the schedule) and resumed."""
    warm = "train.warmup_steps=2"
    straight = train(_config(short_shapes, tmp_path / "a", warm), progress_bar=False, task_type=AutoencoderTask)
    train(_config(short_shapes, tmp_path / "b", warm, "train.max_steps=2"), progress_bar=False,
          task_type=AutoencoderTask)
    resumed = train(_config(short_shapes, tmp_path / "b", warm), resume="latest", progress_bar=False,
                    task_type=AutoencoderTask)
    a, b = (load_file(str(step_dirs(d / "checkpoints")[-1] / "ema.safetensors")) for d in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    exported = step_dirs(straight / "checkpoints")[-1] / EXPORT_DIR
    codec = build_codec(CodecConfig(kind="autoencoder", path=str(exported)))
    assert (codec.channels, codec.factor) == (4, 2)
    config = _config(short_shapes, straight)
    clips = AutoencoderTask(config, "cpu").dataset(config)
    latents = codec.encode(torch.stack([clips[i]["video"] for i in range(4)]))
    assert latents.shape == (4, 4, 2, 8, 8)
    assert abs(latents.std().item() - 1) < 0.5  # the exported scale makes the latents about unit variance


def test_resume_with_another_architecture_is_refused(short_shapes, tmp_path):
    train(_config(short_shapes, tmp_path, "train.max_steps=2"), progress_bar=False, task_type=AutoencoderTask)
    with pytest.raises(CheckpointError, match="autoencoder config"):
        train(_config(short_shapes, tmp_path, "autoencoder.latent_channels=8"), resume="latest", progress_bar=False,
              task_type=AutoencoderTask)
    with pytest.raises(CheckpointError, match="holds an autoencoder"):
        load_model(step_dirs(tmp_path / "checkpoints")[-1])


def test_cli_reports_heldout_psnr(short_shapes, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train/train_autoencoder.py"), "--config",
                             str(ROOT / "configs/ae-tiny.yaml"), f"data.root={short_shapes}",
                             f"train.output_dir={tmp_path}",
                             "train.sample_every=2", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "reconstruction.json").read_text())
    assert 0 < report["heldout_psnr_db"] < 100 and report["factor"] == 2
    assert f"held-out reconstruction PSNR {report['heldout_psnr_db']:.2f} dB" in result.stdout
    logged = [json.loads(line) for line in (tmp_path / "heldout_psnr.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4]


def test_bad_autoencoder_configs_name_the_key():
    with pytest.raises(ConfigError, match="autoencoder.resolution=17 must be a positive multiple of"):
        build_autoencoder(_load(["autoencoder.resolution=17"]).autoencoder)
    with pytest.raises(ConfigError, match="AutoencoderTiny needs the same channel count"):
        tiny = ["autoencoder.architecture=AutoencoderTiny", "autoencoder.block_out_channels=[8,16]"]
        build_autoencoder(_load(tiny).autoencoder)


@pytest.mark.parametrize("architecture", ["AutoencoderTiny", "AutoencoderKL"])
def test_exported_autoencoder_loads_without_warnings_and_identically(tmp_path, caplog, architecture):
    """The export (and the shipped checkpoints/ae-shapes128) records no config key its class ignores, so diffusers
    warns of nothing on load (AutoencoderTiny used to record block_out_channels); the weights load unchanged."""
    from diffusers.utils import logging as diffusers_logging

    from ca2vdm.config import AutoencoderConfig
    from ca2vdm.training.autoencoder import export_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder(AutoencoderConfig(architecture=architecture, block_out_channels=[8, 8], resolution=16,
                                             latent_channels=4, layers_per_block=1)).eval()
    export_autoencoder(ae, tmp_path / "ae", shift=0.1, std=2.0)
    recorded = json.loads((tmp_path / "ae/config.json").read_text())
    assert ("block_out_channels" in recorded) == (architecture == "AutoencoderKL")  # a real AutoencoderKL argument
    diffusers_logging.enable_propagation()  # diffusers logs to its own handler; let caplog see it too
    try:
        with caplog.at_level("WARNING"):
            codec = build_codec(CodecConfig(kind="autoencoder", path=str(tmp_path / "ae")))
            build_codec(CodecConfig(kind="autoencoder", path=str(ROOT / "checkpoints/ae-shapes128")))
    finally:
        diffusers_logging.disable_propagation()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("diffusers")] == []
    state = codec.autoencoder.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ae.state_dict().items()) and state.keys() == ae.state_dict().keys()
    assert (codec.scaling, codec.shift, codec.factor) == (0.5, 0.1, 2)
