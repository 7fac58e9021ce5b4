"""Self-rollout (ca2vdm.rollout): the context the model makes for itself is exactly what inference makes, anchored
to the real clip by rollout_t, with the given frames real; training with it is deterministic and resumable."""
from pathlib import Path

import pytest
import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.config import load_config
from ca2vdm.errors import ConfigError
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training.diffusion_task import DiffusionTask
from ca2vdm.training.rollout import given_frames, rollout_context

from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(steps=3, shift=1.0, cond_noise=0.05, seed=7)


def clip(model, batch=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    return torch.rand(batch, 3, cfg.clip_frames, cfg.resolution, cfg.resolution, generator=g) * 2 - 1


@pytest.mark.parametrize("sink_frames", [0, 3])
def test_free_rollout_is_inference_from_the_given_frames(sink_frames):
    """rollout_t=1: the rolled-out chunks are exactly what the KV-cache pipeline generates from the clip's given
    frames (first frame, or the sinks) with the same seed and labels; given frames and the rest stay real."""
    model = random_model(num_classes=3, sink_frames=sink_frames).train()
    video, labels = clip(model), torch.tensor([1, 3])  # 3: the null label (label dropout)
    num_cond = model.cfg.layout.clip_chunks(model.cfg.clip_frames)[-1][0]
    given = given_frames(model.cfg)
    assert given == max(1, sink_frames)
    out = rollout_context(model, video, labels, num_cond, start_t=1.0, **SETTINGS)
    assert model.training  # mode restored
    pipe = LongVideoPipeline(model, steps=3)
    state = pipe.start(batch=2, label=labels, seed=7, first_frames=video[:, :, :given])
    want = torch.cat([pipe.next_chunk(state).frames for _ in range((num_cond - given) // model.cfg.chunk_frames)], 2)
    assert out.shape == video.shape
    torch.testing.assert_close(out[:, :, given:num_cond], want, rtol=0, atol=1e-6)
    assert torch.equal(out[:, :, :given], video[:, :, :given]) and torch.equal(out[:, :, num_cond:],
                                                                              video[:, :, num_cond:])
    assert (out[:, :, given:num_cond] - video[:, :, given:num_cond]).abs().mean() > 0.1


def test_rollout_t_anchors_the_context_to_the_real_clip():
    """rollout_t=0 returns the real clip; the context moves further from it as rollout_t grows."""
    model = random_model(num_classes=3)
    video, labels = clip(model), torch.tensor([0, 2])
    num_cond = model.cfg.layout.clip_chunks(model.cfg.clip_frames)[-1][0]
    assert torch.equal(rollout_context(model, video, labels, num_cond, start_t=0.0, **SETTINGS), video)
    gaps = [(rollout_context(model, video, labels, num_cond, start_t=t, **SETTINGS) - video).abs().mean().item()
            for t in (0.2, 0.6, 1.0)]
    assert 0 < gaps[0] < gaps[1] < gaps[2]


def test_rollout_needs_a_chunk_boundary_and_leaves_short_contexts_real():
    model = random_model()
    video = clip(model)
    assert rollout_context(model, video, None, 1, start_t=1.0, **SETTINGS) is video  # only the given frame
    with pytest.raises(ValueError, match="chunk boundary"):
        rollout_context(model, video, None, 2, start_t=1.0, **SETTINGS)


def test_latent_chunks_are_not_clamped():
    """Pixels are clamped to [-1, 1]; a latent model's samples are not (unit-variance latents exceed 1), and a
    checkpoint's codec says which."""
    model = random_model()
    latent = LongVideoPipeline.for_checkpoint(model, CheckpointMetadata.from_raw({"codec": {"kind": "autoencoder"}},
                                                                                  model.cfg))
    pixel = LongVideoPipeline.for_checkpoint(model, CheckpointMetadata.from_raw({}, model.cfg))
    assert not latent.pixel_space and pixel.pixel_space
    frames = lambda pipe: torch.cat([c.frames for c in pipe.generate(3, seed=0)], 2)  # noqa: E731
    big, clamped = frames(latent), frames(pixel)
    assert big.abs().max() > 1.5 and clamped.abs().max() <= 1
    torch.testing.assert_close(big.clamp(-1, 1)[:, :, :1], clamped[:, :, :1])  # same first frame, then contexts differ


def test_self_rollout_share_of_steps_and_config_errors():
    """diffusion.self_rollout=0 draws nothing extra (old runs unchanged); 1 conditions every step on the model's
    own samples, which changes the loss; bad values are reported by key."""
    for key, value in (("self_rollout", 1.5), ("rollout_t", 0), ("rollout_steps", 0)):
        with pytest.raises(ConfigError, match=f"diffusion.{key}"):
            load_config(ROOT / "configs/tiny.yaml", [f"diffusion.{key}={value}"])
    config = load_config(ROOT / "configs/tiny.yaml", ["diffusion.objective=all", "diffusion.rollout_steps=2"])
    task, model = DiffusionTask(config, torch.device("cpu")), random_model(num_classes=3).train()
    batch = {"video": clip(model, 2), "label": torch.tensor([0, 1])}
    loss = lambda: task.loss(model, batch, config, torch.Generator().manual_seed(3)).item()  # noqa: E731
    with torch.no_grad():
        real = loss()
        config.diffusion.self_rollout = 1.0
        own = loss()
        assert own == loss()  # the rollout's noise comes from the step's generator
    assert abs(own - real) > 1e-4 and model.training
