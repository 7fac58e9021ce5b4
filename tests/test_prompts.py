"""Text conditioning in the model and the pipeline: cross-attention cache == recompute, prompt K/V computed once,
switches (recache == a fresh generation whose window was committed under the new condition; keep; reset)."""
import copy

import pytest
import torch

from ca2vdm.config import model_config, to_dict
from ca2vdm.encoders.text import WordLlamaEncoder
from ca2vdm.errors import SettingError
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model

TEXT = dict(text_encoder="wordllama", text_dim=256, text_tokens=8)


@pytest.fixture(scope="module")
def encoder():
    return WordLlamaEncoder(max_tokens=8)


def _pipe(model, encoder, mode="kv", **settings):
    settings.setdefault("cfg_scale", 2.5)
    return LongVideoPipeline(model, steps=3, cache=mode, text_encoder=encoder, **settings)


def _frames(pipe, chunks, **kw):
    return torch.cat([c.frames for c in pipe.generate(chunks, **kw)], dim=2)


def test_cross_attention_cache_equals_recompute(encoder):
    """Cached generation of a text model (guided: the prompt and the empty prompt batched) == recomputing the window
    at every step, while the window is not full; the prompt changes the video."""
    model = random_model(**TEXT)
    kw = dict(batch=2, prompt="a red circle", seed=3)
    kv, full, none = (_frames(_pipe(model, encoder, mode), 4, **kw) for mode in ("kv", "full", "none"))
    assert kv.shape == (2, 3, 7, 16, 16)
    assert (kv - full).abs().max() <= 1e-4 and (kv - none).abs().max() <= 1e-4
    other = _frames(_pipe(model, encoder), 4, batch=2, prompt="a blue square", seed=3)
    assert (kv - other).abs().max() > 1e-3


def test_prompt_kv_computed_once_per_prompt(encoder, monkeypatch):
    model = random_model(**TEXT)
    calls = []
    original = model.text_kv
    monkeypatch.setattr(model, "text_kv", lambda text: calls.append(len(text)) or original(text))
    pipe = _pipe(model, encoder)
    video = pipe.generate(3, prompt="a red circle")
    [next(video) for _ in range(3)]  # 3 chunks x 3 steps x (cond + uncond) and 3 commits
    assert calls == [2]  # once, for both guidance rows
    state = pipe.start(prompt="a red circle")
    pipe.switch(state, prompt="a blue square")
    assert calls == [2, 2, 2]


def _run_then_switch(pipe, chunks, start, switch, seed_after=7):
    state = pipe.start(seed=0, **start)
    for _ in range(chunks):
        pipe.next_chunk(state)
    window = torch.cat(state.conditioning.sinks + state.conditioning.context, dim=2).clone()
    before = copy.deepcopy(state.conditioning)  # its cache and prompt K/V before the switch
    pipe.switch(state, **switch)
    state.generator = torch.Generator().manual_seed(seed_after)  # the same noise for the chunk compared
    return pipe.next_chunk(state).frames, window, before, state


@pytest.mark.parametrize("kind", ["prompt", "label"])
def test_recache_equals_a_fresh_generation_committed_under_the_new_condition(encoder, kind):
    """After a re-cache the next chunk is the one a new video gets whose first frames are the window (as committed)
    under the new prompt or label: the window is run once more, under it, and nothing of the old one is left."""
    model = random_model(**TEXT) if kind == "prompt" else random_model(num_classes=3)
    old, new = ({"prompt": "a red circle"}, {"prompt": "a blue square"}) if kind == "prompt" else \
        ({"label": 0}, {"label": 2})
    pipe = _pipe(model, encoder)
    switched, window, _, state = _run_then_switch(pipe, 4, old, {**new, "mode": "recache"})
    assert window.shape[2] == model.cfg.max_context_frames  # the window is full: frames were evicted
    fresh = _pipe(model, encoder, cond_noise=0.0)  # the window's frames are committed as they were (perturbed)
    fresh_state = fresh.start(first_frames=window, seed=0, **new)
    fresh_state.generator = torch.Generator().manual_seed(7)
    assert (switched - fresh.next_chunk(fresh_state).frames).abs().max() <= 1e-4
    unswitched, *_ = _run_then_switch(pipe, 4, old, {**old, "mode": "recache"})
    assert (switched - unswitched).abs().max() > 1e-3
    assert state.conditioning.cache.frames_committed == window.shape[2] + model.cfg.chunk_frames


def test_keep_changes_only_the_prompt_and_reset_drops_the_window(encoder):
    model = random_model(**TEXT)
    pipe = _pipe(model, encoder)
    old, new = {"prompt": "a red circle"}, {"prompt": "a blue square"}
    # keep: the frames' K/V stay as made under the old prompt; the new prompt's K/V are read from then on
    kept, _, before, state = _run_then_switch(pipe, 4, old, {**new, "mode": "keep"})
    assert not torch.equal(before.text.k, state.conditioning.text.k)  # (frames' K/V: the next test)
    recached, *_ = _run_then_switch(pipe, 4, old, {**new, "mode": "recache"})
    unswitched, *_ = _run_then_switch(pipe, 4, old, {**old, "mode": "keep"})
    assert (kept - recached).abs().max() > 1e-3 and (kept - unswitched).abs().max() > 1e-3
    # reset: no context at all, so the chunk no longer depends on what came before (two different pasts agree) ...
    reset, _, _, state = _run_then_switch(pipe, 4, old, {**new, "mode": "reset"})
    assert state.conditioning.cache.frames_committed == model.cfg.chunk_frames  # only the new chunk
    other_past = _pipe(model, encoder)
    state = other_past.start(seed=5, prompt="a green triangle")
    for _ in range(3):
        other_past.next_chunk(state)
    other_past.switch(state, **new, mode="reset")
    state.generator = torch.Generator().manual_seed(7)
    assert (reset - other_past.next_chunk(state).frames).abs().max() <= 1e-5
    # ... and equals the recompute mode's reset (an empty window there too)
    none_reset, *_ = _run_then_switch(_pipe(model, encoder, "none"), 4, old, {**new, "mode": "reset"})
    assert (reset - none_reset).abs().max() <= 1e-4


def test_flush_keeps_only_the_last_frame_recached(encoder):
    """infinity-RoPE's KV flush: the window becomes the last frame, re-cached under the new prompt, so the next chunk
    is a new video's first chunk after that frame (as committed), whatever came before it."""
    model = random_model(**TEXT)
    pipe = _pipe(model, encoder)
    new = {"prompt": "a blue square"}
    flushed, window, _, state = _run_then_switch(pipe, 4, {"prompt": "a red circle"}, {**new, "mode": "flush"})
    assert state.conditioning.cache.frames_committed == 1 + model.cfg.chunk_frames  # the last frame, then the chunk
    fresh = pipe.start(seed=0, **new)
    pipe.adopt_window(fresh, [], [window[:, :, -1:]], state.frames - model.cfg.chunk_frames)
    fresh.generator = torch.Generator().manual_seed(7)
    assert (flushed - pipe.next_chunk(fresh).frames).abs().max() <= 1e-5


def test_keep_unchanged_frame_kv(encoder):
    model = random_model(**TEXT)
    pipe = _pipe(model, encoder)
    state = pipe.start(seed=0, prompt="a red circle")
    for _ in range(4):
        pipe.next_chunk(state)
    k, v = state.conditioning.cache.k.clone(), state.conditioning.cache.v.clone()
    pipe.switch(state, prompt="a blue square", mode="keep")
    assert torch.equal(k, state.conditioning.cache.k) and torch.equal(v, state.conditioning.cache.v)
    pipe.switch(state, prompt="a blue square", mode="recache")
    assert not torch.equal(k, state.conditioning.cache.k)


def test_bad_conditioning_one_line(encoder):
    text, labels = random_model(**TEXT), random_model(num_classes=3)
    with pytest.raises(SettingError, match="conditioned on prompts, not labels"):
        _pipe(text, encoder).start(label=1)
    with pytest.raises(SettingError, match="conditioned on labels, not prompts"):
        _pipe(labels, encoder).start(prompt="a red circle")
    with pytest.raises(SettingError, match="takes no prompt"):
        _pipe(random_model(), encoder).start(prompt="a red circle")
    with pytest.raises(SettingError, match="prompt='': must be a non-empty text"):
        _pipe(text, encoder).start(prompt="")
    with pytest.raises(SettingError, match="is 10 tokens long; this model reads at most 8"):
        _pipe(text, encoder).start(prompt="a very small red circle drifting left very slowly")
    pipe = _pipe(text, encoder, "none")
    with pytest.raises(SettingError, match="switch_mode=keep: needs cache=kv"):
        pipe.switch(pipe.start(prompt="a red circle"), prompt="a blue square", mode="keep")
    pipe = _pipe(random_model(sink_frames=1, **TEXT), encoder)
    with pytest.raises(SettingError, match="attention sinks"):
        pipe.switch(pipe.start(prompt="a red circle"), prompt="a blue square", mode="reset")


def test_label_models_are_unchanged():
    """A label model has no text modules and records the model config it recorded before prompts existed."""
    cfg = model_config("demo")
    assert not [k for k in random_model(num_classes=3).state_dict() if "cross" in k or "text" in k]
    assert not {"text_encoder", "text_dim", "text_tokens"} & set(to_dict(cfg))
    assert to_dict(model_config("text-demo"))["text_encoder"] == "wordllama"
