"""The training objectives: the all-chunk (teacher-forcing) loss against the one-chunk loss, its layout's
causality, and that it trains."""
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange

from ca2vdm.config import load_config
from ca2vdm.data.synthetic import SHAPES, render_shape_video
from ca2vdm.errors import ConfigError
from ca2vdm.models.dit import CausalVideoDiT
from ca2vdm.training.diffusion_task import DiffusionTask
from ca2vdm.training.losses import causal_flow_loss, teacher_forcing_flow_loss

from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]


def strong_model(**overrides) -> CausalVideoDiT:
    """A random tiny model with weights scaled up, so that a wrong mask, position or prefix moves the loss by ~0.2
    instead of ~1e-4 (far above the ~1e-6 float error of a correct layout)."""
    model = random_model(num_classes=3, **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    return model


def draws(chunks, batch=2, size=16, seed=0):
    """A video (B, 3, T, H, W), its noise, the clean frames' perturbation noise and per-chunk times."""
    g = torch.Generator().manual_seed(seed)
    T, Tc = chunks[-1][0] + chunks[-1][1], chunks[-1][0]
    video = torch.randn(batch, 3, T, size, size, generator=g)
    return (video, torch.randn(video.shape, generator=g), torch.randn(batch, 3, Tc, size, size, generator=g),
            torch.rand(batch, len(chunks), generator=g))


@pytest.mark.parametrize("prefix_frames,first_frame_chunk,own_context", [(0, True, False), (2, True, False),
                                                                         (3, False, False), (2, True, True)])
def test_all_chunk_terms_equal_the_one_chunk_objective(prefix_frames, first_frame_chunk, own_context):
    """Same noise and time: the all-chunk loss's term for chunk k equals causal_flow_loss on chunk k, also when the
    conditioning frames come from another context (self-rollout) while the targets stay the video's."""
    model = strong_model(prefix_frames=prefix_frames, first_frame_chunk=first_frame_chunk,
                         max_context_frames=5 if first_frame_chunk else 4)
    chunks = model.cfg.layout.clip_chunks(model.cfg.clip_frames)
    video, noise, cond_eps, t = draws(chunks)
    context = draws(chunks, seed=1)[0] if own_context else None
    y = torch.tensor([0, 2])
    with torch.no_grad():
        terms = teacher_forcing_flow_loss(model, video, y, chunks, 0.05, noise=noise, cond_eps=cond_eps, t=t,
                                          context=context, per_chunk=True)
        mean = teacher_forcing_flow_loss(model, video, y, chunks, 0.05, noise=noise, cond_eps=cond_eps, t=t,
                                         context=context)
        ref = torch.stack([causal_flow_loss(model, video, y, s, n, 0.05, t=t[:, k], context=context,
                                            noise=torch.cat([cond_eps[:, :, :s], noise[:, :, s:s + n]], dim=2))
                           for k, (s, n) in enumerate(chunks)])
        real = teacher_forcing_flow_loss(model, video, y, chunks, 0.05, noise=noise, cond_eps=cond_eps, t=t,
                                         per_chunk=True)
    assert terms.shape == (len(chunks),)
    torch.testing.assert_close(terms, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, ref.mean(), rtol=1e-5, atol=1e-6)  # mean over chunks, not over frames
    assert ref.std() > 1e-3  # the chunks' terms differ, so a mix-up of chunks would show
    if own_context:  # the first chunk has no conditioning; every later chunk's term sees the other context
        torch.testing.assert_close(terms[0], real[0])
        assert ((terms[1:] - real[1:]).abs() > 1e-3).all()


def test_weights_keep_only_the_chosen_samples_in_both_objectives():
    """A 0/1 weight per sample (and chunk) gives the loss of the chosen samples alone; the all-chunk terms still
    equal the one-chunk losses with the same weights."""
    model = strong_model()
    chunks = model.cfg.layout.clip_chunks(model.cfg.clip_frames)
    video, noise, cond_eps, t = draws(chunks, batch=3)
    y = torch.tensor([0, 2, 1])
    weight = torch.tensor([[1.0, 0, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1]])  # (B, K); chunk 1: no sample
    with torch.no_grad():
        terms = teacher_forcing_flow_loss(model, video, y, chunks, 0.05, noise=noise, cond_eps=cond_eps, t=t,
                                          weight=weight, per_chunk=True)
        for k, (s, n) in enumerate(chunks):
            one = lambda rows, w=None: causal_flow_loss(  # noqa: E731
                model, video[rows], y[rows], s, n, 0.05, t=t[rows, k], weight=w,
                noise=torch.cat([cond_eps[rows, :, :s], noise[rows, :, s:s + n]], dim=2))
            weighted = one(slice(None), weight[:, k])
            torch.testing.assert_close(terms[k], weighted, rtol=1e-5, atol=1e-6)
            chosen = weight[:, k].bool()
            if chosen.any():
                torch.testing.assert_close(weighted, one(chosen), rtol=1e-5, atol=1e-6)
            else:
                assert weighted == 0
        unweighted = teacher_forcing_flow_loss(model, video, y, chunks, 0.05, noise=noise, cond_eps=cond_eps, t=t,
                                               per_chunk=True)
    assert ((terms - unweighted).abs() > 1e-4).any()  # the weights matter


def test_context_replaces_only_the_conditioning_frames():
    """causal_flow_loss(context=...): the conditioning frames come from the context, the noisy chunk and the target
    from the video; context frames from the noisy chunk on are ignored."""
    model = strong_model()
    chunks = model.cfg.layout.clip_chunks(model.cfg.clip_frames)
    video, noise, _, t = draws(chunks)
    s, n = chunks[2]
    noise, t = noise[:, :, :s + n], t[:, 0]
    y = torch.tensor([0, 2])
    loss = lambda **kw: causal_flow_loss(model, video, y, s, n, 0.05, noise=noise, t=t, **kw)  # noqa: E731
    later_differs = torch.cat([video[:, :, :s], -video[:, :, s:]], dim=2)
    with torch.no_grad():
        base = loss()
        assert torch.equal(loss(context=video), base)
        assert torch.equal(loss(context=later_differs), base)
        assert not torch.isclose(loss(context=torch.flip(video, dims=[2])), base)


@pytest.mark.parametrize("prefix_frames", [0, 2])
def test_teacher_forcing_layout_is_causal(prefix_frames):
    """Noisy chunk j depends only on clean chunks < j and on itself; clean frames never see noisy ones."""
    model = strong_model(prefix_frames=prefix_frames)
    chunks = model.cfg.layout.clip_chunks(model.cfg.clip_frames)  # [0] [1 2] [3 4] [5 6]
    Tc = chunks[-1][0]  # clean frames 0..4, then noisy frames 0..6
    x, t = torch.randn(1, 3, Tc + 7, 16, 16), torch.rand(1, Tc + 7)
    t[:, :Tc] = 0
    y = torch.tensor([1])

    def change(frame: int) -> torch.Tensor:
        """Largest output change per frame (Tc + T,) when ``frame`` of the sequence is perturbed."""
        x2 = x.clone()
        x2[:, :, frame] += 1.0
        with torch.no_grad():
            out = model(x2, t, y, num_cond_frames=Tc, teacher_forcing=True)
        return (out - base).abs().amax(dim=(0, 1, 3, 4))

    with torch.no_grad():
        base = model(x, t, y, num_cond_frames=Tc, teacher_forcing=True)
    for j, (s, n) in enumerate(chunks):
        noisy = change(Tc + s)  # the noisy copy of chunk j
        own = slice(Tc + s, Tc + s + n)
        assert torch.all(noisy[:own.start] == 0) and torch.all(noisy[own.stop:] == 0)
        assert noisy[own].min() > 1e-3  # bidirectional inside the chunk
        if s < Tc:
            clean = change(s)  # the clean copy of chunk j
            assert torch.all(clean[:s] == 0)  # earlier clean chunks
            assert torch.all(clean[Tc:Tc + s + n] == 0)  # noisy chunks <= j
            assert clean[s:Tc].min() > 1e-3  # clean chunks >= j: block-causal among the clean frames
            assert clean[Tc + s + n:].min() > 1e-3  # every later noisy chunk sees it


def test_teacher_forcing_rejects_bad_layouts():
    model = random_model()
    x, t = torch.randn(1, 3, 9, 16, 16), torch.zeros(1, 9)
    with pytest.raises(ValueError, match="num_cond_frames=2 clean"):  # clean part ends before the last chunk starts
        model(x, t, num_cond_frames=2, teacher_forcing=True)
    with pytest.raises(ValueError, match="takes no KV cache"):
        model(x[:, :, :2], t[:, :2], cache=model.new_cache(1), teacher_forcing=True)


def shapes_batch(batch: int, frames: int, size: int = 16, seed: int = 0) -> dict:
    """A batch of synthetic bouncing-shape clips in [-1, 1] with their labels, as the data loader yields it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(SHAPES), size=batch)
    videos = [render_shape_video(rng, frames, size, SHAPES[k]) for k in labels]
    video = torch.from_numpy(np.stack(videos)).float() / 127.5 - 1
    return {"video": rearrange(video, "b t h w c -> b c t h w"), "label": torch.from_numpy(labels)}


def test_objective_config_selects_the_loss():
    """diffusion.objective routes DiffusionTask.loss; an unknown value is an error naming the key."""
    with pytest.raises(ConfigError, match="diffusion.objective"):
        load_config(ROOT / "configs/tiny.yaml", ["diffusion.objective=every"])
    config = load_config(ROOT / "configs/tiny.yaml", ["diffusion.objective=all"])
    assert load_config(ROOT / "configs/tiny.yaml").diffusion.objective == "chunk"  # measured no faster on CPU
    task, model = DiffusionTask(config, torch.device("cpu")), strong_model()
    batch = shapes_batch(2, config.model.clip_frames)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        got = task.loss(model, batch, config, gen())
        g = gen()
        drop = torch.rand(2, generator=g) < config.diffusion.label_dropout  # the task's label dropout draw
        labels = torch.where(drop, 3, batch["label"])
        want = teacher_forcing_flow_loss(model, batch["video"], labels, task.chunks, config.diffusion.cond_noise,
                                         generator=g)
        config.diffusion.objective = "chunk"
        one = task.loss(model, batch, config, gen())
    assert torch.equal(got, want)
    assert not torch.isclose(one, got)


def test_with_sinks_the_task_weights_chunks_by_where_the_clip_starts():
    """model.sink_frames > 0: DiffusionTask.loss passes the batch's "contiguous" flags through chunk_weights."""
    config = load_config(ROOT / "configs/tiny.yaml", ["diffusion.objective=all", "model.sink_frames=1",
                                                     "model.num_classes=3"])
    task, model = DiffusionTask(config, torch.device("cpu")), strong_model()
    batch = {**shapes_batch(2, config.model.clip_frames), "contiguous": torch.tensor([True, False])}
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        got = task.loss(model, batch, config, gen())
        g = gen()
        drop = torch.rand(2, generator=g) < config.diffusion.label_dropout
        labels = torch.where(drop, 3, batch["label"])
        weight = torch.tensor([[1.0] * len(task.chunks), [0.0] * (len(task.chunks) - 1) + [1.0]])
        want = teacher_forcing_flow_loss(model, batch["video"], labels, task.chunks, config.diffusion.cond_noise,
                                         generator=g, weight=weight)
        unweighted = task.loss(model, {**batch, "contiguous": torch.tensor([True, True])}, config, gen())
    assert torch.equal(got, want)
    assert not torch.isclose(got, unweighted)


def test_all_chunk_objective_trains():
    """Gradients reach every parameter, and a few steps on a fixed batch lower the fixed-noise loss."""
    config = load_config(ROOT / "configs/tiny.yaml", ["diffusion.label_dropout=0"])
    task = DiffusionTask(config, torch.device("cpu"))
    batch = shapes_batch(4, config.model.clip_frames)
    torch.manual_seed(0)
    model = CausalVideoDiT(config.model)
    g = torch.Generator().manual_seed(1)
    fixed = dict(noise=torch.randn(batch["video"].shape, generator=g),
                 cond_eps=torch.randn(*batch["video"][:, :, :task.chunks[-1][0]].shape, generator=g),
                 t=torch.rand(4, len(task.chunks), generator=g))

    def evaluate() -> float:
        with torch.no_grad():
            return teacher_forcing_flow_loss(model, batch["video"], batch["label"], task.chunks, 0.05,
                                             **fixed).item()

    before = evaluate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(12):
        loss = task.loss(model, batch, config, torch.Generator().manual_seed(step))
        loss.backward()
        if step == 2:  # adaLN-Zero: after two updates every branch is open, so every parameter gets a gradient
            assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                       for p in model.parameters())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert evaluate() < 0.8 * before  # 1.73 -> 1.18 here; a fresh model predicts zero
