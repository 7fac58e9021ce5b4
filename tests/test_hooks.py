"""ca2vdm/models/hooks.py and the block stack's hook interface (StackCall): attach, detach, chain, reset; the
quantities a step-caching policy reads; scopes and typed state of ca2vdm/sampling/step_cache/base.py."""
import pytest
import torch

from ca2vdm.models.hooks import HookRegistry, ModelHook
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import StepCache, TaylorSeer, TeaCache

from helpers import random_model


class Tag(ModelHook):
    """Appends its name to every call's log on the way in and out; counts resets."""

    def __init__(self, name, log):
        self.name, self.log, self.resets = name, log, 0

    def forward(self, call, *args):
        self.log.append(f"{self.name}>")
        out = call(*args)
        self.log.append(f"<{self.name}")
        return out + [self.name]

    def reset(self):
        self.resets += 1


def test_registry_chains_in_attach_order_detaches_and_resets():
    log, hooks = [], HookRegistry()
    body = lambda x: log.append("body") or [x]  # noqa: E731
    assert hooks(body, 1) == [1] and log == ["body"]  # no hooks: the call itself
    a, b = Tag("a", log), Tag("b", log)
    hooks.attach("a", a)
    hooks.attach("b", b)
    log.clear()
    assert hooks(body, 1) == [1, "b", "a"] and log == ["a>", "b>", "body", "<b", "<a"]  # the first attached outermost
    assert hooks.names == ["a", "b"] and "a" in hooks and len(hooks) == 2
    with pytest.raises(ValueError, match="already attached"):
        hooks.attach("a", Tag("a", log))
    hooks.reset()
    assert (a.resets, b.resets) == (1, 1)
    assert hooks.detach("a") is a and hooks.names == ["b"] and hooks.get("a") is None
    with hooks.attached("c", Tag("c", log)):
        assert hooks.names == ["b", "c"]
    with pytest.raises(RuntimeError), hooks.attached("d", Tag("d", log)):
        raise RuntimeError("the scope ends in an error")
    assert hooks.names == ["b"]  # detached whatever happened


def test_stack_call_exposes_the_policy_quantities_and_runs_the_blocks_once():
    """A hook sees the frames being denoised (a recompute pass's leading conditioning frames cut off) and the first
    block's modulated input; running the call computes every block once."""
    model = random_model(num_classes=3)
    seen, calls = {}, []

    class Probe(ModelHook):
        def forward(self, call, stack_call):
            seen["noisy"] = stack_call.noisy(stack_call.x)
            seen["modulated"] = stack_call.modulated_input()
            return call(stack_call)

    first = model.stack.blocks[0]
    handle = first.register_forward_hook(lambda *a: calls.append(1))
    x, t, y = torch.randn(1, 3, 5, 16, 16), torch.zeros(1, 5), torch.tensor([1])
    t[:, 3:] = 0.7
    with torch.no_grad():
        plain = model(x, t, y, num_cond_frames=3)
        calls.clear()
        with model.step_cache_hooks.attached("probe", Probe()):
            hooked = model(x, t, y, num_cond_frames=3)
    handle.remove()
    assert torch.equal(hooked, plain) and len(calls) == 1  # the first block ran once
    tokens, c = model.embed(x, t, y)
    with torch.no_grad():
        assert torch.equal(seen["noisy"], tokens[:, 3:])
        assert torch.equal(seen["modulated"], first.modulated_input(tokens[:, 3:], c[:, 3:]))


def test_a_pipeline_never_changes_the_model_it_is_given():
    """Mode, weights and hooks are as before after sampling with a step cache (the policy is attached only while a
    chunk is sampled), so one model can serve pipelines with different policies."""
    model = random_model(num_classes=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for policy in (TeaCache(threshold=0.5), TaylorSeer(interval=2)):
        list(LongVideoPipeline(model, steps=4, cfg_scale=1.5, policy=policy).generate(2, label=0))
        assert policy.model is None
    assert model.training and len(model.step_cache_hooks) == 0
    assert all(len(hooks) == 0 for _, hooks in model.attention_hooks())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_step_scopes_restore_the_enclosing_scope():
    policy = StepCache()
    with policy.step("cond+uncond", 3, 8, branches=2):
        with policy.step("cond", 3, 8):
            assert (policy.branch, policy.branches) == ("cond", 1)
        assert (policy.branch, policy.index, policy.branches) == ("cond+uncond", 3, 2)
    assert (policy.branch, policy.index, policy.num_steps) == ("cond", 0, 1)


def test_typed_state_per_branch_resets_every_chunk_and_every_video():
    policy = TeaCache(threshold=0.1)
    with policy.step("cond", 1, 4):
        policy.branch_state.acc = 0.5
    assert policy.states["cond"].acc == 0.5 and policy.states["uncond"].acc == 0.0  # a fresh state per branch
    policy.begin_chunk()
    assert len(policy.states) == 0
    with policy.step("cond", 1, 4):
        policy.branch_state.residual = torch.zeros(1)
    policy.reset()
    assert len(policy.states) == 0 and policy.skipped == 0
