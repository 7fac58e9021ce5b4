"""``ca2vdm export`` never clobbers: not its source, not a training checkpoint, not an existing file
without --overwrite; and a resume refuses an export (or an autoencoder's weights) put in place of ema.safetensors."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.checkpoints.weights import read_metadata, save_tensors
from ca2vdm.config import load_config
from ca2vdm.errors import CheckpointError
from ca2vdm.training.checkpoint_dirs import step_dirs
from ca2vdm.training.export import check_training_weights
from ca2vdm.training.loop import train

from helpers import ca2vdm_command, checkout_env, run_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    """A 2-step tiny run with one checkpoint."""
    out = tmp_path_factory.mktemp("export") / "run"
    train(_config(shapes, out), progress_bar=False)
    return out


def _config(shapes, out, *extra):
    return load_config(ROOT / "configs/tiny.yaml", [f"data.root={shapes}", f"train.output_dir={out}",
                                                    "train.batch_size=2", "train.max_steps=2", "train.save_every=2",
                                                    *extra])


def _export(*args) -> str:
    """Run ``ca2vdm export`` in this process: its error message, or "" when it succeeded."""
    return str(run_command("export", *args) or "")


def test_export_refuses_its_source_a_training_checkpoint_and_existing_files(run, tmp_path):
    step = step_dirs(run / "checkpoints")[-1]
    ema, files = (step / "ema.safetensors").read_bytes(), sorted(step.iterdir())
    refused = {  # dst -> what the one-line error says
        step / "ema.safetensors": "the checkpoint being exported",
        step / "fp16.safetensors": "inside the checkpoint being exported",
        step / "sub" / "x.safetensors": "inside the checkpoint being exported",
    }
    for dst, message in refused.items():
        for extra in ([], ["--overwrite"]):
            error = _export(step, dst, *extra)
            assert error.startswith("error: ") and message in error and "\n" not in error, error
    result = subprocess.run(ca2vdm_command("export", step, step / "ema.safetensors"), capture_output=True, text=True,
                            env=checkout_env(), timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert (step / "ema.safetensors").read_bytes() == ema and sorted(step.iterdir()) == files

    copy = tmp_path / "copy.safetensors"  # a file export: its own source, with or without --overwrite
    assert _export(step, copy, "--dtype", "fp32") == ""
    before = copy.read_bytes()
    assert "the checkpoint being exported" in _export(copy, copy, "--overwrite")
    assert copy.read_bytes() == before

    mine = tmp_path / "mine.safetensors"  # a user's file: replaced only with --overwrite
    mine.write_bytes(b"my own file")
    assert "already exists; pass --overwrite" in _export(step, mine)
    assert mine.read_bytes() == b"my own file"
    assert _export(step, mine, "--overwrite") == ""
    assert read_metadata(mine)["step"] == 2


def test_resume_refuses_an_export_or_an_autoencoder_in_place_of_the_ema(run, shapes, tmp_path):
    """An fp16 export copied over ema.safetensors, or weights of the other kind, stop --resume with one clear
    error before any work; the run's own files are untouched."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    step = step_dirs(copy / "checkpoints")[-1]
    ema = step / "ema.safetensors"
    assert _export(step, tmp_path / "fp16.safetensors") == ""
    shutil.copy(tmp_path / "fp16.safetensors", ema)  # what the export used to do when pointed at ema.safetensors
    with pytest.raises(CheckpointError, match="holds F16 tensors, not the float32 EMA .* an export"):
        train(_config(shapes, copy, "train.max_steps=4"), resume="latest", progress_bar=False)
    assert not (copy / "checkpoints/step_000004").exists()

    state = load_file(run / "checkpoints/step_000002/ema.safetensors")
    save_tensors(ema, state, {"autoencoder_config": {"architecture": "AutoencoderKL"}})  # another task's weights
    with pytest.raises(CheckpointError, match="holds an autoencoder .*, not a video model"):
        train(_config(shapes, copy, "train.max_steps=4"), resume="latest", progress_bar=False)
    with pytest.raises(CheckpointError, match="holds a video model .*, not an autoencoder"):
        check_training_weights(run / "checkpoints/step_000002", "autoencoder_config")
    check_training_weights(run / "checkpoints/step_000002", "model_config")  # the run's own weights pass
    assert all(v.dtype == torch.float32 for v in state.values())
