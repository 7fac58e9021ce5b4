"""MagCache, TaylorSeer, ChunkCache and the policy registry (ca2vdm/step_cache/{magcache,taylorseer,chunkcache,
registry}.py): each rule against a reference written from its formula, exactness when off, per-chunk state, commit
passes, and the command-line settings."""
import itertools
import warnings

import pytest
import torch

from ca2vdm.config.step_caches import parse_step_cache_options
from ca2vdm.errors import SettingError
from ca2vdm.models.dit import BlockStack
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import (
    POLICIES,
    ChunkCache,
    FasterCache,
    MagCache,
    MagCacheRecorder,
    TaylorSeer,
    build_step_cache,
    fit_polynomial,
)
from ca2vdm.sampling.step_cache.chunkcache import extrapolate, forecast_errors, plan
from ca2vdm.sampling.step_cache.magcache import magnitude_ratio, resample_ratios
from ca2vdm.sampling.step_cache.taylorseer import forecast, refresh_derivatives, schedule

from helpers import random_model

STEPS = 6


def _video(policy, chunks=3, steps=STEPS, cfg_scale=2.0):
    model = random_model(num_classes=3)
    pipe = LongVideoPipeline(model, steps=steps, cfg_scale=cfg_scale, policy=policy)
    results = list(pipe.generate(chunks, label=1, seed=0))
    return torch.cat([r.frames for r in results], dim=2), results


# -- every new policy -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make_policy", [lambda: MagCache([1.0] * STEPS, threshold=0.0),
                                         lambda: TaylorSeer(interval=1),
                                         lambda: TaylorSeer(interval=1, order=2),
                                         lambda: ChunkCache(threshold=0.0)])
def test_off_settings_are_exact(make_policy):
    ref, ref_results = _video(None)
    out, results = _video(make_policy())
    assert torch.equal(out, ref)
    assert [r.model_evals for r in results] == [r.model_evals for r in ref_results]
    assert all(r.skipped_evals == 0 for r in results)


@pytest.mark.parametrize("make_policy", [lambda: MagCache([1.0] * 8, threshold=10.0, max_skip=8, retention=0.0),
                                         lambda: TaylorSeer(interval=8, cfg_reuse=1),
                                         lambda: ChunkCache(threshold=100.0, warmup=1)])
def test_commit_passes_always_run_in_full(make_policy, monkeypatch):
    """Aggressive settings skip most denoising passes, never a commit pass (which writes the KV cache)."""
    commits = []
    forward = BlockStack.forward
    monkeypatch.setattr(BlockStack, "forward",
                        lambda self, x, c, ctx: commits.append(ctx.commit) or forward(self, x, c, ctx))
    out, results = _video(make_policy(), chunks=4, steps=8)
    assert sum(commits) == 4  # one commit pass per chunk ran the block stack
    assert sum(r.skipped_evals for r in results) > 0 and torch.isfinite(out).all()
    assert all(r.model_evals + r.skipped_evals == 8 * 2 for r in results)


@pytest.mark.parametrize("make_policy", [lambda: MagCache([0.9] * STEPS, threshold=0.5, retention=0.0),
                                         lambda: TaylorSeer(interval=3, warmup=1)])
def test_state_resets_every_chunk(make_policy):
    """The schedule-driven policies decide alike in every chunk of the same length and start each from nothing."""
    policy = make_policy()
    _, results = _video(policy, chunks=4)
    skipped = [r.skipped_evals for r in results[1:]]  # chunk 0 is the shorter first-frame chunk
    assert skipped[0] > 0 and len(set(skipped)) == 1
    policy.begin_chunk()
    assert len(policy.states) == 0 and policy.skipped == 0


# -- MagCache -------------------------------------------------------------------------------------------------------
def test_magcache_decisions_follow_the_formula():
    ratios = [1.0, 1.3, 0.95, 0.9, 0.97, 0.99, 0.8, 0.98, 0.96, 1.0]
    policy = MagCache(ratios, threshold=0.12, max_skip=2, retention=0.2)
    policy.begin_chunk()
    decisions = []
    for i in range(len(ratios)):
        with policy.step("cond", i, len(ratios)):
            compute = policy.should_compute()
            policy.branch_state.residual = torch.zeros(1)
            decisions.append(compute)
    expected, ratio, err, skipped = [], 1.0, 0.0, 0
    for i, gamma in enumerate(ratios):
        if i < 0.2 * len(ratios) or i == len(ratios) - 1:  # retention phase and last step
            expected.append(True)
            ratio, err, skipped = 1.0, 0.0, 0
            continue
        ratio, skipped = ratio * gamma, skipped + 1
        err += abs(1 - ratio)
        if err < 0.12 and skipped <= 2:
            expected.append(False)
        else:
            expected.append(True)
            ratio, err, skipped = 1.0, 0.0, 0
    assert decisions == expected
    assert False in decisions and decisions.count(True) > 3


def test_magcache_ratio_and_recorder():
    r = torch.randn(2, 4, 3, 8)
    assert magnitude_ratio(2 * r, r).item() == pytest.approx(2.0)
    assert resample_ratios([1.0, 2.0, 3.0], 5) == [1.0, 1.5, 2.0, 2.5, 3.0]
    recorder = MagCacheRecorder()
    _video(recorder, chunks=2)
    means, stds = recorder.curve()
    assert len(means) == STEPS and means[0] == 1.0 and all(m > 0 for m in means)
    assert all(len(recorder.samples[i]) == 2 for i in range(1, STEPS))  # one ratio per step and chunk
    with pytest.raises(ValueError, match="ca2vdm calibrate --policy magcache --checkpoint ck.safetensors"):
        build_step_cache("magcache", {}, {}, "ck.safetensors")


# -- TaylorSeer -----------------------------------------------------------------------------------------------------
def test_taylorseer_schedule_and_forecast_formula():
    assert schedule(16, 4, 2) == [0, 1, 5, 9, 13, 15]
    assert schedule(16, 2, 2, growth=1) == [0, 1, 3, 6, 10, 15]
    assert schedule(5, 1, 2) == [0, 1, 2, 3, 4]
    a, b = torch.randn(3), torch.randn(3)
    d = refresh_derivatives(refresh_derivatives([], a, 0, 1), a + 2 * b, 2, 1)  # f(s) = a + b s at s = 0, 2
    assert torch.allclose(forecast(d, 3), a + 5 * b)  # first order is exact on a line
    f = [torch.tensor([float(s * s)]) for s in (0, 2, 4)]  # second order from backward differences, by hand:
    d = refresh_derivatives(refresh_derivatives(refresh_derivatives([], f[0], 0, 2), f[1], 2, 2), f[2], 2, 2)
    d1, d2 = (16 - 4) / 2, ((16 - 4) / 2 - (4 - 0) / 2) / 2  # D1 = 6, D2 = 2
    assert torch.allclose(forecast(d, 3), torch.tensor([16 + d1 * 3 + d2 * 9 / 2]))


def test_taylorseer_skips_the_scheduled_steps_and_reuses_uncond():
    _, results = _video(TaylorSeer(interval=2, warmup=2, growth=1), steps=10, chunks=2)
    computed = schedule(10, 2, 2, growth=1)  # [0, 1, 3, 6, 9]
    assert all(r.model_evals == 2 * len(computed) for r in results)
    _, results = _video(TaylorSeer(interval=2, warmup=2, growth=1, cfg_reuse=1), steps=10, chunks=2)
    assert all(r.model_evals == 2 * len(computed) - 1 for r in results)  # step 3 runs the conditional branch only


# -- ChunkCache -----------------------------------------------------------------------------------------------------
def _brute_force_plan(errors, n, threshold, warmup):
    best = None
    for m in range(n - warmup):
        for middle in itertools.combinations(range(warmup, n - 1), m):
            steps = [*range(warmup), *middle, n - 1]
            cost = sum(errors[(steps[a - 1] if a else -1, steps[a], s)]
                       for a in range(len(steps) - 1) for s in range(steps[a] + 1, steps[a + 1]))
            if cost <= threshold and (best is None or (len(steps), cost) < best[:2]):
                best = (len(steps), cost, steps)
    return best[2]


@pytest.mark.parametrize("warmup", [1, 2])
def test_chunkcache_plan_is_the_cheapest_schedule_within_budget(warmup):
    gen = torch.Generator().manual_seed(0)
    n = 8
    errors = {(k, j, i): torch.rand((), generator=gen).item() for j in range(n) for k in range(-1, j)
              for i in range(j + 1, n)}
    for threshold in (0.0, 0.3, 1.0, 2.0, 50.0):
        assert plan(errors, n, threshold, warmup) == _brute_force_plan(errors, n, threshold, warmup)


def test_chunkcache_forecast_errors_formula():
    residuals = [torch.full((2, 3), float(v)) for v in (1.0, 2.0, 4.0, 5.0)]
    errors = forecast_errors(residuals)
    scale = sum(abs(v) for v in (1, 2, 4, 5)) / 4
    assert errors[(-1, 0, 2)] == pytest.approx(abs(4 - 1) / scale)  # reuse r_0 at step 2
    assert errors[(0, 1, 3)] == pytest.approx(abs(5 - (2 + (2 - 1) * 2)) / scale)  # line through r_0, r_1 at 3
    assert errors[(1, 2, 3)] == pytest.approx(abs(5 - (4 + 2)) / scale)
    assert torch.equal(extrapolate([(1, residuals[1]), (2, residuals[2])], 4), torch.full((2, 3), 8.0))


def test_chunkcache_calibrates_on_the_first_chunk_then_follows_its_plan():
    policy = ChunkCache(threshold=0.5, calibrate=1, cfg_reuse=0)
    _, results = _video(policy, chunks=4, steps=8)
    assert results[0].skipped_evals == 0 and policy.samples == 1  # the calibration chunk computes every step
    assert sum(r.skipped_evals for r in results[1:]) > 0
    assert policy.schedule == plan(policy.errors, 8, 0.5, policy.config.warmup)  # the last chunk ran the record's plan
    assert results[-1].model_evals == 2 * len(policy.schedule)
    keys = set(policy.errors)
    policy.begin_chunk()
    assert len(policy.states) == 0 and set(policy.errors) == keys  # per-chunk state resets, the record stays
    policy.reset()
    assert not policy.errors and policy.samples == 0


def test_chunkcache_refreshes_the_record_from_computed_steps():
    policy = ChunkCache(threshold=1.0, momentum=0.5)
    policy.errors, policy.scale = {(0, 1, s): 0.2 for s in (2, 3, 4)}, 2.0
    with policy.step("cond", 4, 8):
        policy._learn(torch.full((3,), 1.2), anchors=[0, 1])  # measured 1.2 / 2.0 = 0.6 = 3x the record
    assert [policy.errors[(0, 1, s)] for s in (2, 3, 4)] == pytest.approx([0.4] * 3)  # 1 + 0.5 (3 - 1) = 2x


# -- registry, settings and calibration warnings ----------------------------------------------------------------------
def test_registry_offers_every_policy_and_parses_settings():
    assert set(POLICIES) == {"none", "teacache", "fastercache", "adacache", "magcache", "taylorseer", "chunkcache"}
    assert parse_step_cache_options("taylorseer", ["interval=3", "growth=1"]) == {"interval": 3, "growth": 1}
    assert parse_step_cache_options("taylorseer", ["interval=3,cfg_reuse=1"]) == {"interval": 3, "cfg_reuse": True}
    assert parse_step_cache_options("chunkcache", ["threshold=2"]) == {"threshold": 2.0}
    with pytest.raises(SettingError, match="its settings: interval, order, warmup, growth, cfg_reuse"):
        parse_step_cache_options("taylorseer", ["threshold=3"])
    with pytest.raises(SettingError, match="taylorseer's interval must be a whole number"):
        parse_step_cache_options("taylorseer", ["interval=2.5"])
    with pytest.raises(SettingError, match="needs a step cache"):
        parse_step_cache_options("none", ["threshold=1"])
    with pytest.raises(SettingError, match="step cache magcache has no such setting"):
        build_step_cache("magcache", {"bogus": 1}, {"magcache_ratios": [1.0]})
    policy = build_step_cache("taylorseer", {"interval": 3})
    assert isinstance(policy, TaylorSeer) and policy.config.interval == 3


def test_long_video_cli_rejects_a_bad_setting(capsys):
    from ca2vdm.cli.generate import parse_args

    args = parse_args(["--step-cache", "chunkcache", "--step-cache-opt", "threshold=1.5"])
    assert args.sampler["step_cache_options"] == {"threshold": 1.5}
    with pytest.raises(SystemExit):
        parse_args(["--step-cache", "magcache", "--step-cache-opt", "speed=9"])
    assert "--step-cache-opt speed: step cache magcache has no such setting; its settings: threshold, max_skip, " \
        "retention" in capsys.readouterr().err


def test_teacache_on_an_uncalibrated_checkpoint_says_so_once():
    with pytest.warns(UserWarning) as caught:
        build_step_cache("teacache", {"threshold": 0.2}, {}, "ck.safetensors")
    assert len(caught) == 1
    assert "ca2vdm calibrate --checkpoint ck.safetensors" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_step_cache("teacache", {}, {"teacache_coefficients": [0.0, 1.0]}, "ck.safetensors")


def test_polynomial_fit_from_too_few_pairs_warns():
    pairs = [(0.01 * i, 0.02 * i + 0.001 * (-1) ** i) for i in range(1, 15)]  # 14 pairs, as in the report
    with pytest.warns(UserWarning, match="only 14 .* pairs"):
        fit_polynomial(pairs, degree=4)


def test_guide_sees_the_current_step_index():
    """A policy's guide() decides for the step being taken (it saw the previous step's index before)."""
    class Spy(FasterCache):
        def guide(self, both, cond, scale):
            self.seen.append(self.index)
            return super().guide(both, cond, scale)

    policy = Spy(cfg_every=3, cfg_warmup=1, reuse_from=1.0)
    policy.seen = []
    _video(policy, chunks=2)
    assert policy.seen == list(range(STEPS)) * 2


def test_generate_video_builds_the_policy_with_its_settings_and_refuses_an_uncalibrated_magcache(tmp_path):
    from ca2vdm.checkpoints.weights import save_weights
    from ca2vdm.generation.video_files import GenerationOptions, generate_video

    model = random_model(num_classes=3)
    checkpoint = tmp_path / "tiny.safetensors"
    save_weights(checkpoint, model.state_dict(), model.cfg, {"diffusion_config": {"steps": 8, "cfg_scale": 1.0}})
    opts = GenerationOptions(chunks=2, label=1,
                             sampler=dict(step_cache="taylorseer", step_cache_options={"interval": 3}))
    stats = generate_video(checkpoint, tmp_path / "out.mp4", opts)
    assert [c["model_evals"] for c in stats["chunks"]] == [len(schedule(8, 3, 2))] * 2  # steps 0, 1, 4, 7
    with pytest.raises(ValueError, match="no MagCache calibration"):
        generate_video(checkpoint, tmp_path / "out2.mp4",
                       GenerationOptions(chunks=1, sampler=dict(step_cache="magcache")))
    assert not (tmp_path / "out2.mp4").exists()
