"""Every shipped video model loads as the README's commands load it and makes a chunk with its recorded settings
(a prompt for a text model, a label for a label model): a file swapped, cut or trained with other code fails here."""
from pathlib import Path

import numpy as np
import pytest

import ca2vdm

ROOT = Path(__file__).resolve().parents[1]
VIDEO_MODELS = ["demo", "demo-4step", "demo-4step-long", "latent-demo", "text-demo", "text-demo-4step", "wan-shapes"]


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_a_shipped_model_makes_a_chunk(name):
    pipe = ca2vdm.load_pipeline(ROOT / "checkpoints" / f"{name}.safetensors", "cpu")
    condition = {"prompt": "a red circle"} if pipe.sampler.model.text_conditional else {"label": 0}
    chunks = list(pipe.generate(1, seed=0, **condition))
    frames = np.concatenate([c.pixels[0] for c in chunks])  # (T, H, W, 3) uint8, the first frame included
    cfg = pipe.sampler.model.cfg
    assert frames.shape == (1 + cfg.chunk_frames, *pipe.size, 3) and frames.dtype == np.uint8
    assert frames.std() > 1  # not a blank video
