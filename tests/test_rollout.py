"""Self-rollout (ca2vdm.rollout): the context the model makes for itself is exactly what inference makes, anchored
to the real clip by rollout_t, with the given frames real; training with it is deterministic and resumable. Context
jitter recolours only the frames between the given ones and the targets."""
from pathlib import Path

import pytest
import torch

from ca2vdm.config import ConfigError, load_config
from ca2vdm.pipeline import LongVideoPipeline
from ca2vdm.rollout import given_frames, jitter_context, rollout_context
from ca2vdm.training import DiffusionTask, chunk_layout
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
    num_cond = chunk_layout(model.cfg)[-1][0]
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
    num_cond = chunk_layout(model.cfg)[-1][0]
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
    latent = LongVideoPipeline.from_metadata(model, {"codec": {"kind": "autoencoder"}})
    pixel = LongVideoPipeline.from_metadata(model, {})
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


@pytest.mark.parametrize("sink_frames", [0, 3])
def test_context_jitter_recolours_only_the_context_after_the_given_frames(sink_frames):
    model = random_model(num_classes=3, sink_frames=sink_frames)
    video = clip(model, batch=4) * 0.5  # intensities in [0.25, 0.75]: a gain up to 1.3 is never clamped
    given, num_cond = given_frames(model.cfg), chunk_layout(model.cfg)[-1][0]
    out = jitter_context(video, given, num_cond, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, :given], video[:, :, :given]) and torch.equal(out[:, :, num_cond:],
                                                                            video[:, :, num_cond:])
    gain = (out[:, :, given:num_cond] + 1) / (video[:, :, given:num_cond] + 1)  # (B, C, n, H, W)
    per_channel = gain.flatten(2)  # one gain per sample and channel, the same on every recoloured pixel
    torch.testing.assert_close(per_channel, per_channel[:, :, :1].expand_as(per_channel))
    assert ((per_channel >= 0.7 - 1e-6) & (per_channel <= 1.3 + 1e-6)).all() and per_channel.std() > 0.05
    assert torch.equal(jitter_context(video, num_cond, num_cond, 0.3, torch.Generator()), video)  # nothing between


def test_context_jitter_changes_the_loss_and_is_refused_for_latent_models():
    with pytest.raises(ConfigError, match="diffusion.context_jitter"):
        load_config(ROOT / "configs/tiny.yaml", ["diffusion.context_jitter=1"])
    config = load_config(ROOT / "configs/tiny.yaml", ["diffusion.objective=all"])
    task, model = DiffusionTask(config, torch.device("cpu")), random_model(num_classes=3)
    batch = {"video": clip(model, 2), "label": torch.tensor([0, 1])}
    loss = lambda: task.loss(model, batch, config, torch.Generator().manual_seed(3)).item()  # noqa: E731
    with torch.no_grad():
        real = loss()
        config.diffusion.context_jitter = 0.3
        assert abs(loss() - real) > 1e-5 and loss() == loss()
    with pytest.raises(ConfigError, match="context_jitter scales pixel intensities"):
        load_config(ROOT / "configs/tiny.yaml", ["diffusion.context_jitter=0.1", "codec.kind=autoencoder",
                                                  "codec.path=unused", "model.in_channels=4"])
