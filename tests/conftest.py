import pytest
import torch

from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.data.synthetic import write_dataset

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
