import numpy as np
import pytest
import torch

from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import AdaCache, FasterCache, StepCache, TeaCache, TeaCacheRecorder, fit_polynomial
from ca2vdm.sampling.step_cache.adacache import OFF
from ca2vdm.sampling.step_cache.base import relative_l1
from ca2vdm.sampling.step_cache.fastercache import from_spectrum, low_frequency_mask, split_bands

from helpers import random_model


def _video(policy, chunks=3, cfg_scale=2.0, steps=6, **kw):
    model = random_model(num_classes=3)
    pipe = LongVideoPipeline(model, steps=steps, cfg_scale=cfg_scale, policy=policy)
    results = list(pipe.generate(chunks, label=1, seed=0, **kw))
    return torch.cat([r.frames for r in results], dim=2), results


@pytest.mark.parametrize("policy", [TeaCache(threshold=0.0), FasterCache(cfg_every=1, reuse_from=1.0),
                                    AdaCache(codebook=OFF), StepCache()])
def test_off_settings_are_exact(policy):
    ref, ref_results = _video(None)
    out, results = _video(policy)
    assert torch.equal(out, ref)
    assert [r.model_evals for r in results] == [r.model_evals for r in ref_results]
    assert all(r.skipped_evals == 0 for r in results)


def test_policies_skip_and_report_counts():
    for policy in (TeaCache(threshold=10.0), FasterCache(), AdaCache(codebook=((float("inf"), 3),))):
        out, results = _video(policy, steps=8)
        for r in results:
            assert r.skipped_evals > 0
            assert r.model_evals + r.skipped_evals == 8 * 2  # every step of both guidance branches is accounted
        assert torch.isfinite(out).all()


def test_teacache_decisions_follow_the_formula():
    """Feed hand-made modulated inputs and compare with the rule written out by hand."""
    coefficients = (0.0, 0.0, 2.0, 0.5, 0.0)  # poly(d) = 2 d^2 + 0.5 d
    policy = TeaCache(threshold=0.3, coefficients=coefficients)
    policy.begin_chunk()
    scales = [1.0, 1.1, 1.15, 1.5, 1.52, 1.53, 3.0, 3.1]
    base = torch.randn(4, 16)
    decisions = []
    for i, s in enumerate(scales):
        with policy.step("cond", i, len(scales)):
            compute = policy.should_compute(base * s)
            if compute:
                policy.branch_state.residual = torch.zeros(1)
            decisions.append(compute)
    expected, acc = [], 0.0
    for i, s in enumerate(scales):
        if i in (0, len(scales) - 1):
            expected.append(True)
            acc = 0.0
            continue
        d = abs(s - scales[i - 1]) / scales[i - 1]
        acc += max(0.0, 2 * d * d + 0.5 * d)
        expected.append(acc >= 0.3)
        if acc >= 0.3:
            acc = 0.0
    assert decisions == expected
    assert False in decisions and decisions.count(True) >= 3


def test_teacache_branch_state_is_separate_and_reset_per_chunk():
    policy = TeaCache(threshold=1e9)
    policy.begin_chunk()
    x = torch.ones(2, 3)
    for branch in ("cond", "uncond"):
        with policy.step(branch, 0, 4):
            assert policy.should_compute(x)  # each branch's first step computes
            policy.branch_state.residual = torch.zeros(1)
    with policy.step("cond", 1, 4):
        assert not policy.should_compute(x * 1.01)
    assert policy.states["cond"].acc > 0 and policy.states["uncond"].acc == 0
    policy.begin_chunk()
    assert len(policy.states) == 0
    with policy.step("cond", 1, 4):
        assert policy.should_compute(x)  # a new chunk starts from nothing


def test_recorder_and_polynomial_fit():
    recorder = TeaCacheRecorder()
    _video(recorder, chunks=2)
    assert len(recorder.pairs) == 2 * (6 - 1)  # 2 chunks x 5 step-to-step changes (branches batched)
    assert all(a > 0 and b > 0 for a, b in recorder.pairs)
    xs = np.linspace(0.01, 0.5, 60)
    coefficients, r2 = fit_polynomial(list(zip(xs, 3 * xs ** 2 + 0.1 * xs)), degree=4)
    assert r2 > 0.999 and np.allclose(np.polyval(coefficients, 0.3), 3 * 0.09 + 0.03, atol=1e-6)


def test_fastercache_frequency_split_is_lossless_and_reuses_uncond():
    x = torch.randn(2, 3, 4, 16, 16)
    low, high = split_bands(x)
    assert torch.allclose(from_spectrum(low + high), x, atol=1e-5)
    mask = low_frequency_mask(16, 16, "cpu")
    assert mask[8, 8] and not mask[0, 0] and mask.sum() == 29  # lattice points within radius 16 // 5 = 3
    policy = FasterCache(cfg_every=3, cfg_warmup=1, reuse_from=1.0)
    calls = []
    policy.begin_chunk()
    for i in range(6):
        with policy.step("cond", i, 6):
            policy.guide(lambda: calls.append(("both", i)) or (torch.ones(1, 3, 1, 8, 8), torch.zeros(1, 3, 1, 8, 8)),
                         lambda: calls.append(("cond", i)) or torch.ones(1, 3, 1, 8, 8), 2.0)
    assert [i for b, i in calls if b == "both"] == [0, 1, 4, 5]  # warm-up, every 3rd after it, last step
    assert [i for b, i in calls if b == "cond"] == [2, 3]
    assert policy.skipped == 2


def test_fastercache_attention_extrapolation():
    policy = FasterCache(cfg_every=1, reuse_from=0.5)
    model = random_model()
    pipe = LongVideoPipeline(model, steps=8, policy=policy)
    list(pipe.generate(2, seed=0))
    # steps 4..7 are late; 5 reuses (6 is computed, 7 is the last step): 2 attentions x 2 blocks x 2 chunks
    assert policy.attention_reused == 2 * 2 * 2
    assert "forward" not in vars(model.stack) and "forward" not in vars(model.repeated_blocks()[0].spatial)


def test_adacache_schedule_and_motion_regularisation():
    policy = AdaCache()
    assert [policy.schedule(r) for r in (0.01, 0.05, 0.1, 5.0)] == [4, 3, 2, 1]
    static = torch.ones(1, 4, 2, 3)
    moving = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 3) + 1
    from ca2vdm.sampling.step_cache.adacache import motion
    assert motion(static) == 0 and motion(moving) > 0
    with pytest.raises(ValueError, match="codebook"):
        AdaCache(codebook=((0.1, 2),))


def test_relative_l1():
    a = torch.tensor([1.0, -2.0])
    assert relative_l1(a * 1.5, a).item() == pytest.approx(0.5)


def test_one_policy_at_a_time():
    model = random_model()
    with TeaCache().attached(model):
        with pytest.raises(ValueError, match="already attached"):
            AdaCache().attach(model)
    with AdaCache().attached(model) as policy:
        assert policy.model is model
    assert len(model.step_cache_hooks) == 0


@pytest.mark.parametrize("make_policy", [lambda: TeaCache(threshold=0.1),
                                         lambda: AdaCache(codebook=((0.5, 3), (float("inf"), 1)))])
def test_indicator_sees_the_noisy_chunk_only_in_every_cache_mode(make_policy):
    """While the window is not full, modes kv and none compute the same chunk, so a policy must skip the same
    steps in both: its indicator may not look at the conditioning frames that mode none re-runs."""
    skipped = {}
    for mode in ("kv", "none"):
        model = random_model(num_classes=3)
        pipe = LongVideoPipeline(model, steps=10, cfg_scale=2.0, cache=mode, policy=make_policy())
        skipped[mode] = [r.skipped_evals for r in pipe.generate(4, label=1, seed=0)]
        assert 0 < sum(skipped["kv"]) < 4 * 2 * 10 - 4 * 2 * 2  # skips some steps, not all it may
    assert skipped["none"] == skipped["kv"]
