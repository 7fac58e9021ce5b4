import numpy as np
import pytest
import torch

from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.io.video_writer import VideoWriter

from helpers import STEPS, random_model

# The test models are tiny: one thread avoids oversubscription on small CI machines (2 cores).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """12 labelled synthetic videos (20 frames, 16x16) shared by the training tests; tests that change a dataset copy
    it first."""
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root, num_videos=12, num_frames=20, size=16, seed=0)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny 3-class model with random weights, recording STEPS denoising steps (the CLI and API tests' checkpoint)."""
    model = random_model(num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_weights(path, model.state_dict(), model.cfg,
                 {"diffusion_config": {"steps": STEPS, "shift": 1.0, "cond_noise": 0.05, "cfg_scale": 1.0}})
    return path


@pytest.fixture
def cli_writes(monkeypatch) -> list[np.ndarray]:
    """Every frame batch handed to VideoWriter.write while the fixture is active (the command line's frames), for
    tests that compare frames; equal frames also give equal files (the writer's docstring), which tests compare too."""
    written, original = [], VideoWriter.write

    def write(self, frames: np.ndarray) -> None:
        written.append(frames.copy())
        original(self, frames)

    monkeypatch.setattr(VideoWriter, "write", write)
    return written
