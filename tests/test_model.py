import pytest
import torch

from ca2vdm.config import model_config
from ca2vdm.errors import ConfigError
from ca2vdm.models.dit import CausalVideoDiT

from helpers import random_model


def test_shapes_and_label_errors():
    model = random_model(num_classes=3)
    x = torch.randn(2, 3, 7, 16, 16)
    out = model(x, torch.rand(2, 7), torch.tensor([0, 3]))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="class-conditional"):
        model(x, torch.rand(2, 7))
    with pytest.raises(ValueError, match="expected video"):
        model(torch.randn(2, 3, 7, 12, 16), torch.rand(2, 7), torch.tensor([0, 1]))


def test_fresh_model_predicts_zero():
    """adaLN-Zero: an untrained model's output is exactly zero (every branch gated closed)."""
    model = CausalVideoDiT(model_config("tiny"))
    assert torch.equal(model(torch.randn(1, 3, 3, 16, 16), torch.rand(1, 3)), torch.zeros(1, 3, 3, 16, 16))


@pytest.mark.parametrize("prefix_frames", [0, 2])
def test_causality(prefix_frames):
    """Perturbing frame j changes no output before the start of j's chunk."""
    model = random_model(prefix_frames=prefix_frames)
    x, t = torch.randn(1, 3, 7, 16, 16), torch.rand(1, 7)
    base = model(x, t, num_cond_frames=5)
    chunk_start = {0: 0, 1: 1, 2: 1, 3: 3, 4: 3, 5: 5, 6: 5}  # chunks [0] [1 2] [3 4] [5 6]
    for j in range(7):
        x2 = x.clone()
        x2[:, :, j] += 1.0
        diff = (model(x2, t, num_cond_frames=5) - base).abs().amax(dim=(0, 1, 3, 4))
        assert torch.all(diff[:chunk_start[j]] == 0)
        assert diff[chunk_start[j]:].max() > 1e-4  # and it does change the rest


def test_temporal_shift_invariance():
    """Periodic rotary positions: the same frames at any absolute offset give the same output."""
    model = random_model(first_frame_chunk=False, max_context_frames=4)
    x, t = torch.randn(1, 3, 6, 16, 16), torch.rand(1, 6)
    ref = model(x, t, frame_offset=0)
    for offset in (2, 8, 1000):
        assert (model(x, t, frame_offset=offset) - ref).abs().max() < 1e-4


@pytest.mark.parametrize("prefix_frames", [0, 1, 3])
def test_cached_forward_equals_full_forward(prefix_frames):
    """Committing chunks one by one and running the last chunk on the cache matches one full pass."""
    model = random_model(num_classes=2, prefix_frames=prefix_frames)
    x, y = torch.randn(2, 3, 7, 16, 16), torch.tensor([1, 2])
    t = torch.zeros(2, 7)
    t[:, 5:] = torch.tensor([[0.3], [0.8]])
    full = model(x, t, y, num_cond_frames=5)
    cache = model.new_cache(2)
    for start, length in ((0, 1), (1, 2), (3, 2)):
        model(x[:, :, start:start + length], torch.zeros(2, length), y, cache=cache, commit=True)
        cache.commit(length)
    cached = model(x[:, :, 5:], t[:, 5:], y, cache=cache)
    assert (cached - full[:, :, 5:]).abs().max() <= 1e-5


def test_config_validation_errors():
    with pytest.raises(ConfigError, match="patch_size"):
        model_config("tiny", resolution=18)
    with pytest.raises(ConfigError, match="shorter than a chunk"):
        model_config("tiny", max_context_frames=1)
    with pytest.raises(ConfigError, match="unknown model name"):
        model_config("huge")


@pytest.mark.parametrize("first_frame_chunk,frame_offset,prefix_frames", [(True, 0, 2), (True, 3, 2), (False, 4, 1)])
def test_teacher_forcing_equals_full_pass_per_chunk(first_frame_chunk, frame_offset, prefix_frames):
    """Each noisy chunk of the teacher-forcing layout [clean | noisy] gets the output the full-sequence pass gives
    it after the clean frames before it (same positions, mask and spatial prefix), at any frame offset."""
    model = random_model(num_classes=2, prefix_frames=prefix_frames, first_frame_chunk=first_frame_chunk,
                         max_context_frames=5 if first_frame_chunk else 4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)  # stronger weights: a wrong position or prefix moves the output by far more than the tolerance
    T = model.cfg.clip_frames
    ids = model.cfg.layout.chunk_of(torch.arange(frame_offset, frame_offset + T))
    starts = [i for i in range(T) if i == 0 or ids[i] != ids[i - 1]] + [T]
    Tc = starts[-2]  # the last chunk's clean copy conditions nothing
    clean, noisy, y = torch.randn(2, 3, Tc, 16, 16), torch.randn(2, 3, T, 16, 16), torch.tensor([0, 2])
    t = torch.rand(2, T)
    tf = model(torch.cat([clean, noisy], dim=2), torch.cat([torch.zeros(2, Tc), t], dim=1), y,
               frame_offset=frame_offset, num_cond_frames=Tc, teacher_forcing=True)[:, :, Tc:]
    for s, e in zip(starts[:-1], starts[1:]):
        times = torch.cat([torch.zeros(2, s), t[:, s:e]], dim=1)
        ref = model(torch.cat([clean[:, :, :s], noisy[:, :, s:e]], dim=2), times, y, frame_offset=frame_offset,
                    num_cond_frames=s)[:, :, s:]
        assert (tf[:, :, s:e] - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert len(starts) > 3


def test_ca2vdm_xl_preset_has_the_published_size():
    """The XL preset (configs/ca2vdm-xl.yaml) validates and has 600-1000M parameters (paper: ~724M), counted on the
    meta device (no memory); it works on the 4 x 32 x 32 SD-VAE latents of 256x256 frames."""
    from pathlib import Path

    from ca2vdm.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "ca2vdm-xl.yaml")
    m = config.model
    assert (m.name, m.depth, m.hidden_size, m.num_heads, m.patch_size) == ("ca2vdm-xl", 28, 1152, 16, 2)
    assert (m.in_channels, m.resolution, m.chunk_frames, m.max_context_frames, m.prefix_frames) == (4, 32, 8, 25, 3)
    assert config.codec.kind == "diffusers" and config.codec.path
    with torch.device("meta"):
        model = CausalVideoDiT(m)
    count = sum(p.numel() for p in model.parameters())
    assert 600e6 <= count <= 1000e6, count
    assert model.grid ** 2 == 256  # tokens per frame


def test_cached_denoising_and_commit_passes_reach_the_kernel_without_a_mask(monkeypatch):
    """With the KV cache no pass needs a mask (the chunk attends to every cached frame and to itself), so on CUDA SDPA
    may pick its flash / cuDNN / memory-efficient kernels. Every attention call is routed to SDPA here (no CPU matmul
    shortcut) and spied on: no mask on any cached pass (guided, prefix attention, sinks, a given first frame, a ring
    that wraps); the recompute baseline does pass masks (so the spy sees them when they are there)."""
    from ca2vdm.models import attention as A
    from ca2vdm.sampling.pipeline import LongVideoPipeline

    calls = []
    sdpa = A.F.scaled_dot_product_attention
    monkeypatch.setattr(A, "CPU_MATMUL_MAX_KEYS", 0)
    monkeypatch.setattr(A.F, "scaled_dot_product_attention", lambda q, k, v, attn_mask=None, **kw: calls.append(
        (phase[0], attn_mask, kw.get("is_causal", False), k.shape[-2] > q.shape[-2])) or sdpa(q, k, v, attn_mask, **kw))
    model = random_model(num_classes=3, prefix_frames=2, sink_frames=1)
    phase = ["denoise"]
    model.register_forward_pre_hook(lambda m, args, kw: phase.__setitem__(0, "commit" if kw.get("commit") else
                                                                          "denoise"), with_kwargs=True)
    first = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    for mode in ("kv", "none"):
        calls.clear()
        pipe = LongVideoPipeline(model, steps=2, cfg_scale=2.0, cache=mode)
        frames = torch.cat([c.frames for c in pipe.generate(5, label=1, first_frames=first)], dim=2)
        assert frames.shape[2] == 5 * 2 and torch.isfinite(frames).all()
        if mode == "kv":
            assert {p for p, *_ in calls} == {"denoise", "commit"} and any(reads_cache for *_, reads_cache in calls)
            assert all(mask is None and not causal for _, mask, causal, _ in calls)
        else:
            assert any(mask is not None for _, mask, _, _ in calls)
