"""The conformance suite every registered model family passes (ca2vdm.models.registry), parametrized by the registry:
a new family is tested here without a line more. Its tiny configuration (``ModelSpec.tiny``) runs through the
sampler, the step caches, the trainers' objectives, LoRA and a resumed training run, speaking only the model
interface (ca2vdm.models.base)."""
import contextlib
import copy
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ca2vdm.config import STEP_CACHE_NAMES, load_config
from ca2vdm.data.captioned import write_captioned_dataset
from ca2vdm.encoders.text import WordLlamaEncoder
from ca2vdm.models import lora
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.models.registry import REGISTRY, build_model, spec_of, tiny_config
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import AdaCache, build_step_cache
from ca2vdm.training.loop import train

ARCHS = sorted(REGISTRY)
# every policy, set to skip on a tiny random model (TeaCache uncalibrated: the identity curve; MagCache with a flat one)
POLICIES = {"teacache": lambda: build_step_cache("teacache", {"threshold": 10}),
            "magcache": lambda: build_step_cache("magcache", {"threshold": 0.5}, {"magcache_ratios": [0.98] * 8}),
            "taylorseer": lambda: build_step_cache("taylorseer", {"interval": 2}),
            "chunkcache": lambda: build_step_cache("chunkcache", {"threshold": 10}),
            "fastercache": lambda: build_step_cache("fastercache", {"cfg_every": 2}),
            "adacache": lambda: AdaCache(codebook=((0.5, 3), (float("inf"), 2)))}
TEXT = dict(text_encoder="wordllama", text_dim=256, text_tokens=8)
ROOT = Path(__file__).resolve().parents[1]


def _conditioned(arch: str) -> tuple[dict, dict, dict]:
    """A condition the family takes: (model fields, the condition, another condition), labels where it has them."""
    if "labels" in spec_of(arch).conditions:
        return dict(num_classes=3), {"label": 1}, {"label": 2}
    return dict(TEXT), {"prompt": "a red circle"}, {"prompt": "a blue square"}


def _model(arch: str, seed: int = 0, **overrides) -> CausalVideoModel:
    """The family's tiny model with every weight perturbed (zero-initialised gates too), so every path carries
    signal."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(arch, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def encoder():
    return WordLlamaEncoder(max_tokens=TEXT["text_tokens"])


def _inputs(model, encoder, batch: int) -> tuple[torch.Tensor | None, object]:
    """Labels (B,) or a prompt's token vectors for ``batch`` rows of a full-sequence pass."""
    if model.text_conditional:
        return None, encoder.encode(["a red circle", "a blue square"][:batch])
    return torch.tensor([0, 2][:batch]), None


def _video(pipe, chunks, **kw) -> torch.Tensor:
    return torch.cat([c.frames for c in pipe.generate(chunks, **kw)], dim=2)


def _state(model) -> tuple:
    return model.training, {k: v.clone() for k, v in model.state_dict().items()}, len(model.step_cache_hooks), [
        len(hooks) for _, hooks in model.attention_hooks()]


def _unchanged(model, before) -> bool:
    training, weights, hooks, attention = _state(model)
    return (training, hooks, attention) == (before[0], before[2], before[3]) and all(
        torch.equal(v, before[1][k]) for k, v in weights.items())


def test_every_policy_is_in_the_suite():
    assert set(POLICIES) == set(STEP_CACHE_NAMES) - {"none"}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_model_speaks_the_interface(arch, encoder):
    fields, _, _ = _conditioned(arch)
    model = _model(arch, **fields)
    assert isinstance(model, CausalVideoModel)
    assert model.device.type == "cpu" and model.dtype == torch.float32 and model.frame_shape[0] == model.cfg.in_channels
    assert (model.null_label == 3) == ("num_classes" in fields) and model.text_conditional == ("text_encoder" in fields)
    if model.text_conditional:
        empty = model.empty_text(2, encoder)
        assert len(empty) == 2 and empty.tokens.shape[1] == model.cfg.text_tokens
    assert len(model.repeated_blocks()) == model.cfg.depth
    cache = model.new_cache(2)
    assert isinstance(cache, spec_of(arch).cache) and cache.batch == 2 and cache.frames_committed == 0
    assert cache.nbytes() > 0 and all(callable(getattr(cache, name)) for name in cache.EAGER_METHODS)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_equals_recomputed_while_the_window_fills(arch, encoder):
    """The core guarantee: the context cache == recomputing the window / every frame at every step (guidance rows
    batched), until the window is full."""
    fields, condition, _ = _conditioned(arch)
    model = _model(arch, **fields)
    out = {mode: _video(LongVideoPipeline(model, steps=3, cfg_scale=2.5, cache=mode, text_encoder=encoder), 4,
                        batch=2, seed=3, **condition) for mode in ("kv", "none", "full")}
    assert (out["kv"] - out["none"]).abs().max() <= 1e-4 and (out["kv"] - out["full"]).abs().max() <= 1e-4
    assert out["kv"].abs().max() > 0.05


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_equals_recomputed_far_past_the_window_with_eviction_and_sinks(arch, encoder):
    """One layer (a committed frame's K/V depend on that frame alone): the bounded cache with a sink == recomputing
    [sink | the last frames | chunk] at every step, 12 chunks, frames evicted many times over."""
    fields, condition, _ = _conditioned(arch)
    model = _model(arch, depth=1, sink_frames=1, **fields)
    out = {mode: _video(LongVideoPipeline(model, steps=2, cfg_scale=2.0, cache=mode, text_encoder=encoder), 12,
                        batch=2, seed=4, **condition) for mode in ("kv", "none")}
    assert out["kv"].shape[2] > 3 * model.cfg.clip_frames
    assert (out["kv"] - out["none"]).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", [a for a in ARCHS if "prompts" in spec_of(a).conditions])
def test_a_text_model_cached_equals_recomputed(arch, encoder):
    model = _model(arch, **TEXT)
    out = {mode: _video(LongVideoPipeline(model, steps=3, cfg_scale=2.5, cache=mode, text_encoder=encoder), 4,
                        prompt="a red circle", seed=3) for mode in ("kv", "none")}
    assert (out["kv"] - out["none"]).abs().max() <= 1e-4
    other = _video(LongVideoPipeline(model, steps=3, cfg_scale=2.5, text_encoder=encoder), 4, prompt="a blue square",
                   seed=3)
    assert (out["kv"] - other).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_a_later_chunk_never_changes_an_earlier_one(arch, encoder):
    """Block-causal: the full-sequence pass's output for a chunk does not depend on any later frame."""
    fields, _, _ = _conditioned(arch)
    model = _model(arch, **fields)
    T = model.cfg.clip_frames
    x, t = torch.randn(1, model.cfg.in_channels, T, *model.frame_shape[1:]), torch.rand(1, T)
    y, text = _inputs(model, encoder, 1)
    end = model.cfg.layout.start_of(2)  # the frames of the first two chunks
    changed = x.clone()
    changed[:, :, end:] += 1
    with torch.no_grad():
        a, b = model(x, t, y, text=text), model(changed, t, y, text=text)
    assert torch.equal(a[:, :, :end], b[:, :, :end]) and not torch.equal(a[:, :, end:], b[:, :, end:])


@pytest.mark.parametrize("arch", ARCHS)
def test_teacher_forcing_equals_the_per_chunk_objective(arch, encoder):
    """[clean frames | noisy clip] in one pass: each noisy chunk's output == a full-sequence pass over [the clean
    frames before it | the noisy chunk] (what the one-chunk objective computes)."""
    fields, _, _ = _conditioned(arch)
    model = _model(arch, **fields)
    cfg, T = model.cfg, model.cfg.clip_frames
    chunks = cfg.layout.clip_chunks(T)
    clean, noisy = (torch.randn(2, cfg.in_channels, T, *model.frame_shape[1:]) for _ in range(2))
    t, Tc = torch.rand(2, T), chunks[-1][0]
    y, text = _inputs(model, encoder, 2)
    with torch.no_grad():
        joint = model(torch.cat([clean[:, :, :Tc], noisy], 2), torch.cat([torch.zeros(2, Tc), t], 1), y,
                      teacher_forcing=True, num_cond_frames=Tc, text=text)[:, :, Tc:]
        for start, length in chunks:
            x = torch.cat([clean[:, :, :start], noisy[:, :, start:start + length]], 2)
            times = torch.cat([torch.zeros(2, start), t[:, start:start + length]], 1)
            alone = model(x, times, y, num_cond_frames=start, text=text)[:, :, start:]
            assert (joint[:, :, start:start + length] - alone).abs().max() <= 1e-4


@pytest.mark.parametrize("arch, kind", [(a, k) for a in ARCHS for k in ("labels", "prompts")
                                        if k in spec_of(a).conditions])
def test_a_switch_recache_equals_a_generation_recomputed_under_the_new_condition(arch, kind, encoder):
    """After a recache switch the cached chunk == the chunk recomputed (cache mode none: the window runs under the
    current condition at every step), and differs from keeping the old condition's K/V."""
    model = _model(arch, **(TEXT if kind == "prompts" else dict(num_classes=3)))
    old, new = ({"prompt": "a red circle"}, {"prompt": "a blue square"}) if kind == "prompts" else \
        ({"label": 0}, {"label": 2})
    out = {}
    for mode, switch_mode in (("kv", "recache"), ("none", "recache"), ("kv", "keep")):
        pipe = LongVideoPipeline(model, steps=3, cfg_scale=2.0, cache=mode, text_encoder=encoder)
        state = pipe.start(seed=5, **old)
        for _ in range(3):
            pipe.next_chunk(state)
        pipe.switch(state, mode=switch_mode, **new)
        out[mode, switch_mode] = pipe.next_chunk(state).frames
    assert (out["kv", "recache"] - out["none", "recache"]).abs().max() <= 1e-4
    assert (out["kv", "recache"] - out["kv", "keep"]).abs().max() > 1e-4


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_step_cache_attaches_runs_and_detaches(arch, policy, encoder):
    """Each policy samples the family through the interface, skips some passes, and leaves the model as it was
    (mode, weights, hooks); the passes that ran are counted, not computed from a formula."""
    fields, condition, _ = _conditioned(arch)
    model = _model(arch, **fields).train()
    before = _state(model)
    calls = []
    handle = model.repeated_blocks()[0].register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
    uncalibrated = pytest.warns(UserWarning, match="calibration") if policy == "teacache" else \
        contextlib.nullcontext()
    with uncalibrated:
        pipe = LongVideoPipeline(model, steps=8, cfg_scale=2.0, policy=POLICIES[policy](), text_encoder=encoder)
    results = list(pipe.generate(3, batch=2, seed=0, **condition))
    handle.remove()
    assert _unchanged(model, before)
    commits = len(results) * 2 * 2  # one commit pass per chunk, over both guidance rows of 2 videos
    assert sum(calls) - commits == 2 * sum(r.model_evals for r in results)  # rows of the stack passes that ran
    assert all(r.model_evals + r.skipped_evals == 8 * 2 for r in results)
    assert sum(r.skipped_evals for r in results) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_groups_resolve_and_start_as_the_base(arch, encoder):
    fields, _, _ = _conditioned(arch)
    model = _model(arch, **fields)
    names = [name for name, _ in model.named_modules()]
    groups = spec_of(arch).lora_groups
    assert groups and all(any(re.fullmatch(p, n) for n in names) for p in groups.values())
    x, t = torch.randn(1, model.cfg.in_channels, 3, *model.frame_shape[1:]), torch.rand(1, 3)
    y, text = _inputs(model, encoder, 1)
    with torch.no_grad():
        base = model(x, t, y, text=text)
    adapted = lora.for_training(copy.deepcopy(model), lora.LoraConfig(targets=list(groups)))
    assert {n for n, p in adapted.named_parameters() if p.requires_grad} and all(
        "lora_" in n for n, p in adapted.named_parameters() if p.requires_grad)
    with torch.no_grad():
        assert torch.equal(adapted(x, t, y, text=text), base)  # B = 0: the adapter starts as the base


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioned")
    write_captioned_dataset(root, num_videos=6, num_frames=20, size=16, seed=0)
    return root


@pytest.mark.parametrize("arch", ARCHS)
def test_training_resumes_exactly(arch, shapes, captioned, tmp_path):
    """4 steps + --resume latest + 4 steps == 8 steps, bit for bit (losses and weights), the teacher-forced objective
    on the family's tiny model (labelled shapes, or captioned ones for a family without labels)."""
    condition, data = (dict(num_classes=3), shapes) if "labels" in spec_of(arch).conditions else (
        dict(TEXT, num_classes=0, text_tokens=24), captioned)  # captions run up to 24 WordLlama tokens
    fields = [f"model.{k}={v}" for k, v in {**spec_of(arch).tiny, "arch": arch, **condition}.items()]

    def config(out, steps):
        return load_config(ROOT / "configs/tiny.yaml", [f"data.root={data}", f"train.output_dir={out}",
                                                        "train.batch_size=2", "train.log_every=1",
                                                        f"train.max_steps={steps}", "train.save_every=4",
                                                        "diffusion.objective=all", *fields])

    full = train(config(tmp_path / "full", 8), progress_bar=False)
    train(config(tmp_path / "half", 4), progress_bar=False)
    half = train(config(tmp_path / "half", 8), resume="latest", progress_bar=False)
    losses = [[json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
              for out in (full, half)]
    assert len(losses[0]) == 8 and losses[0] == losses[1]
    a, b = (load_file(out / "checkpoints/step_000008/ema.safetensors") for out in (full, half))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ARCHS)
def test_distillation_runs_on_the_family(arch, tmp_path):
    """The teacher's trajectories (labels, or prompts for a family without labels), then ODE regression and DMD on
    long rollouts that switch their condition inside the window, through the family's own cache: finite losses in the
    critic/student schedule, and a student that samples in its own steps with one branch."""
    from ca2vdm.checkpoints.weights import save_weights
    from ca2vdm.config.training import DistillTrainingConfig
    from ca2vdm.generation.api import load_pipeline
    from ca2vdm.training.distill_task import DistillTask
    from ca2vdm.training.ode_pairs import write_pairs

    fields, first, _ = _conditioned(arch)
    teacher = _model(arch, **fields)
    path = tmp_path / "teacher.safetensors"
    save_weights(path, teacher.state_dict(), teacher.cfg, {"sampler": {"steps": 4, "cfg_scale": 2.0},
                                                           "metadata_version": 2})
    prompts = ["a red circle", "a blue square"] if "prompt" in first else None
    write_pairs(str(path), tmp_path / "ode", videos=4, steps=2, batch=4, shard_size=4, progress=False, prompts=prompts)
    config = load_config(ROOT / "configs/distill-demo.yaml", [
        f"distill.teacher={path}", "distill.steps=2", "distill.ode_steps=1", "distill.critic_ratio=2",
        "distill.rollout_chunks=4", "distill.switch_share=1", f"data.root={tmp_path / 'ode'}",
        f"train.output_dir={tmp_path / 'run'}", "train.batch_size=2", "train.log_every=1", "train.max_steps=3",
        "train.save_every=3", "train.warmup_steps=1"], DistillTrainingConfig)
    out = train(config, progress_bar=False, task_type=DistillTask)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in m if k.startswith("loss_")) for m in metrics] == [
        ["loss_model"], ["loss_critic"], ["loss_critic", "loss_model"]]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    student = load_pipeline(out / "checkpoints/step_000003")
    assert (student.settings.steps, student.settings.cfg_scale) == (2, 1.0)
    assert [c.model_evals for c in student.generate(2, seed=0, **first)] == [2] * 3
