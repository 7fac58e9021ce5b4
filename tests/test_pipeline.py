import pytest
import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model


def _generate(model, mode, chunks, **kw):
    pipe = LongVideoPipeline(model, steps=3, cfg_scale=kw.pop("cfg_scale", 1.0), cache=mode)
    return torch.cat([c.frames for c in pipe.generate(chunks, **kw)], dim=2)


@pytest.mark.parametrize("prefix_frames", [0, 2])
def test_kv_cache_equals_full_recomputation(prefix_frames):
    """The core guarantee: cached generation == recomputing the whole sequence at every step (same noise),
    while the window is not yet full. tiny: window 5 frames -> frames 0..6 (4 chunks) are exact."""
    model = random_model(num_classes=3, prefix_frames=prefix_frames)
    kw = dict(batch=2, label=1, seed=3, cfg_scale=2.5)
    kv, full, none = (_generate(model, mode, 4, **kw) for mode in ("kv", "full", "none"))
    assert kv.shape == (2, 3, 7, 16, 16)
    assert (kv - full).abs().max() <= 1e-4
    assert (kv - none).abs().max() <= 1e-4
    assert kv.abs().max() > 0.05  # not trivially equal


def test_modes_diverge_only_after_window_is_full():
    model = random_model()
    kv, full = _generate(model, "kv", 6, seed=1), _generate(model, "full", 6, seed=1)
    per_frame = (kv - full).abs().amax(dim=(0, 1, 3, 4))
    assert per_frame[:7].max() <= 1e-4
    assert per_frame[7:].max() > 1e-4  # "full" attends beyond the window, "kv" evicts: they must differ


def test_continue_given_frames_matches_recompute():
    model = random_model(num_classes=3)
    first = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    kv = _generate(model, "kv", 2, first_frames=first, label=2)
    full = _generate(model, "full", 2, first_frames=first, label=2)
    assert kv.shape[2] == 4 and (kv - full).abs().max() <= 1e-4


def test_deterministic_and_seed_dependent():
    model = random_model()
    a, b, c = _generate(model, "kv", 3, seed=5), _generate(model, "kv", 3, seed=5), _generate(model, "kv", 3, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1


def test_bad_arguments():
    model = random_model()
    with pytest.raises(ValueError, match="cache=disk: must be one of kv, none, full"):
        LongVideoPipeline(model, cache="disk")
    with pytest.raises(ValueError, match="num_chunks"):
        next(LongVideoPipeline(model).generate(0))
    with pytest.raises(ValueError, match="unconditional"):
        next(LongVideoPipeline(model).generate(1, label=1))
    with pytest.raises(ValueError, match="label=7: out of range"):
        next(LongVideoPipeline(random_model(num_classes=3)).generate(1, label=7))


def test_commit_frames_replace_the_conditioning():
    model = random_model()
    pipe = LongVideoPipeline(model, steps=2)
    a, b, c = pipe.start(seed=0), pipe.start(seed=0), pipe.start(seed=0)
    first = pipe.next_chunk(a)
    pipe.next_chunk(b, commit_frames=first.frames)  # the same frames: the same state
    pipe.next_chunk(c, commit_frames=torch.zeros_like(first.frames))
    second = pipe.next_chunk(a).frames
    assert torch.equal(pipe.next_chunk(b).frames, second)
    assert not torch.equal(pipe.next_chunk(c).frames, second)


def test_pipeline_from_checkpoint_metadata():
    model = random_model(num_classes=3)
    raw = {"diffusion_config": {"steps": 5, "shift": 2.0, "cond_noise": 0.1, "cfg_scale": 3.0, "label_dropout": 0.1}}
    meta = CheckpointMetadata.from_raw(raw, model.cfg)  # a checkpoint written before metadata versions
    pipe = LongVideoPipeline.for_checkpoint(model, meta, steps=None, cache="none")
    s = pipe.settings
    assert (s.steps, s.shift, s.cond_noise, s.cfg_scale, s.cache) == (5, 2.0, 0.1, 3.0, "none")
    assert LongVideoPipeline.for_checkpoint(model, meta, steps=2, cfg_scale=1.0).settings.steps == 2
    empty = CheckpointMetadata.from_raw({}, model.cfg)
    assert LongVideoPipeline.for_checkpoint(model, empty).settings.steps == 16  # nothing recorded: the defaults


def test_no_label_runs_one_branch_and_ignores_the_guidance_scale():
    """Without a label both guidance branches would be the null label: nothing to guide, so one branch runs."""
    model = random_model(num_classes=3)
    results = {}
    for scale in (1.0, 1.5, -5.0):
        pipe = LongVideoPipeline(model, steps=3, cfg_scale=scale)
        chunks = list(pipe.generate(2, seed=0))
        assert [c.model_evals for c in chunks] == [3, 3]
        results[scale] = torch.cat([c.frames for c in chunks], dim=2)
    assert torch.equal(results[1.5], results[1.0]) and torch.equal(results[-5.0], results[1.0])
    guided = list(LongVideoPipeline(model, steps=3, cfg_scale=1.5).generate(2, label=0, seed=0))
    assert [c.model_evals for c in guided] == [6, 6]  # with a label: both branches
