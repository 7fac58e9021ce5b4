"""The causal Wan (ca2vdm/models/wan/): against diffusers' WanTransformer3DModel on the same weights (one chunk; chunks
through the cache with eviction and sinks == one masked pass of diffusers' forward), its two position modes, the
cache's bookkeeping. The interface checks every family passes are in tests/test_model_conformance.py."""
import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.models.registry import build_model, tiny_config
from ca2vdm.models.wan.model import diffusers_config
from ca2vdm.sampling.pipeline import LongVideoPipeline

TEXT = 5  # prompt tokens of the tests' random prompts (the model pads them to text_tokens = 8)


def _pair(seed: int = 0, **overrides):
    """Our causal Wan and diffusers' model on the same perturbed weights (every path carries signal)."""
    torch.manual_seed(seed)
    model = build_model(tiny_config("wan", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    reference = WanTransformer3DModel(**diffusers_config(model.cfg))
    reference.load_state_dict(model.state_dict())
    return model.eval(), reference.eval()


def _prompt(batch: int = 2) -> TextEmbeddings:
    tokens = torch.zeros(batch, 8, 256)
    tokens[:, :TEXT] = torch.randn(batch, TEXT, 256, generator=torch.Generator().manual_seed(7))
    mask = torch.zeros(batch, 8, dtype=torch.bool)
    mask[:, :TEXT] = True
    return TextEmbeddings(tokens, mask)


class MaskedProcessor(WanAttnProcessor):
    """diffusers' own processor with a fixed attention mask (for its self-attention)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, self.mask, rotary_emb)


def test_the_module_tree_is_diffusers_and_one_chunk_equals_its_forward():
    """Same parameter names; one chunk without a cache == WanTransformer3DModel.forward (fp32, <= 1e-5), with Wan's
    timestep 1000 t for every frame (as one timestep per video and as one per token)."""
    model, reference = _pair(chunk_frames=3, first_frame_chunk=False, max_context_frames=3)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    x, text = torch.randn(2, 3, 3, 16, 16), _prompt()
    t = torch.tensor([[0.3] * 3, [0.9375] * 3])
    with torch.no_grad():
        ours = model(x, t, text=text)
        per_video = reference(x, t[:, 0] * 1000, text.tokens, return_dict=False)[0]
        per_token = reference(x, (t * 1000).repeat_interleave(64, dim=1), text.tokens, return_dict=False)[0]
    assert (ours - per_video).abs().max() <= 1e-5 and (ours - per_token).abs().max() <= 1e-5
    assert ours.abs().max() > 0.1


def _window_mask(frames: int, chunk: int, sinks: int, context: int) -> torch.Tensor:
    """(F, F) frame mask of chunks through a bounded cache: frame i sees frame j of its own or an earlier chunk that
    is a sink or among the last ``context - sinks`` frames before i's chunk."""
    i, j = torch.arange(frames)[:, None], torch.arange(frames)[None, :]
    start = i // chunk * chunk
    return (j < start + chunk) & ((j < sinks) | (j >= start - (context - sinks)))


def test_chunks_through_the_cache_equal_diffusers_forward_under_the_window_mask():
    """Absolute positions (Self-Forcing's): 6 chunks of 2 frames through the cache (2 sink frames, a window of 4
    committed frames: frames evicted from chunk 4 on) == diffusers' forward over all frames so far, clean ones at t = 0,
    with the window mask applied by a test processor (<= 1e-4), chunk by chunk."""
    chunk, sinks, context = 2, 2, 4
    model, reference = _pair(chunk_frames=chunk, first_frame_chunk=False, max_context_frames=context,
                             sink_frames=sinks, positions="absolute")
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(1, 3, 12, 16, 16, generator=gen)
    text = _prompt(1)
    cache, prompt = model.new_cache(1), model.text_kv(text)
    for c in range(6):
        s = c * chunk
        noisy = torch.randn(1, 3, chunk, 16, 16, generator=gen)
        with torch.no_grad():
            ours = model(noisy, torch.full((1, chunk), 0.6), cache=cache, text=prompt)
            model(clean[:, :, s:s + chunk], torch.zeros(1, chunk), cache=cache, commit=True, text=prompt)
        cache.commit(chunk)
        frames = s + chunk
        mask = _window_mask(frames, chunk, sinks, context).repeat_interleave(64, 0).repeat_interleave(64, 1)
        for block in reference.blocks:
            block.attn1.set_processor(MaskedProcessor(mask))
        times = torch.cat([torch.zeros(1, s), torch.full((1, chunk), 600.0)], 1).repeat_interleave(64, dim=1)
        with torch.no_grad():
            full = reference(torch.cat([clean[:, :, :s], noisy], 2), times, text.tokens, return_dict=False)[0]
        assert (ours - full[:, :, s:]).abs().max() <= 1e-4, c
    assert cache.frames_committed == 12 > cache.window


def _video(model, mode: str, chunks: int, switch_at: int | None = None, **settings) -> torch.Tensor:
    pipe = LongVideoPipeline(model, steps=2, cfg_scale=2.0, cache=mode, pixel_space=False, **settings)
    state = pipe.start(batch=1, seed=3, prompt=_prompt(1))
    out = []
    for c in range(chunks):
        if c == switch_at:
            other = _prompt(1)
            other.tokens[:] = other.tokens.flip(1)
            pipe.switch(state, prompt=other)
        out.append(pipe.next_chunk(state).frames)
    return torch.cat(out, 2)


def test_absolute_positions_keep_every_frames_index_through_eviction_sinks_and_a_recache():
    """Absolute positions with a sink past the window, then a prompt switch re-caching it: the cache (frames re-cached
    at their own indices, LongLive's) == recomputing the window at every step (sinks at 0.., the rest at their
    indices); one block, so a committed frame's K/V depend on that frame alone."""
    model, _ = _pair(depth=1, sink_frames=1, positions="absolute")
    kv, none = (_video(model, mode, 8, switch_at=6) for mode in ("kv", "none"))
    assert kv.shape[2] > 2 * model.cfg.clip_frames and (kv - none).abs().max() <= 1e-4


def test_sinks_chosen_at_sampling_and_their_original_positions():
    """Sinks chosen at sampling (training-free) sample exactly as a model built with them; with sink_rope=original
    ring sinks stay at their own indices, so ring positions then give what absolute positions give (8 chunks: the
    window evicts, inside the RoPE table), and differ from the re-rotated (adjacent) sinks."""
    ring, built, absolute = (_pair(depth=1, **fields)[0] for fields in (
        {}, dict(sink_frames=1), dict(sink_frames=1, positions="absolute")))
    adjacent = _video(ring, "kv", 8, sink_frames=1)
    assert torch.equal(adjacent, _video(built, "kv", 8))
    original = _video(ring, "kv", 8, sink_frames=1, sink_rope="original")
    assert (original - _video(absolute, "kv", 8)).abs().max() <= 1e-4
    assert (original - adjacent).abs().max() > 1e-3


def test_ring_positions_run_past_wans_rope_table_and_absolute_ones_stop_there_in_one_line():
    """Ring positions with a sink: 20 chunks (39 frames, past the RoPE table of rope_max_seq_len = 32 frames) through
    the cache == recomputing the window numbered from its first frame at every step; in absolute positions the cache
    refuses the first frame past the table, naming the fix."""
    model, _ = _pair(depth=1, sink_frames=1)
    kv, none = (_video(model, mode, 20) for mode in ("kv", "none"))
    assert kv.shape[2] > model.cfg.rope_max_seq_len and (kv - none).abs().max() <= 1e-4
    absolute, _ = _pair(depth=1, sink_frames=1, positions="absolute")
    cache = absolute.new_cache(1)
    cache.commit(1 + 15 * 2)  # bookkeeping only: 31 frames, so the next chunk ends past the table
    with pytest.raises(ValueError, match=r"frame 32 is past Wan's RoPE table .* use model.positions=ring"):
        cache.frame_positions(2)


def test_the_cache_is_preallocated_bounded_and_a_pass_with_gradients_leaves_it_alone():
    model, _ = _pair()
    cache = model.new_cache(2)
    cfg = model.cfg
    assert cache.k.shape == (cfg.depth, 2, cfg.clip_frames, 64, cfg.num_heads, cfg.hidden_size // cfg.num_heads)
    before, nbytes = cache.k.clone(), cache.nbytes()
    k = torch.randn(2, 2 * 64, cfg.num_heads, cfg.hidden_size // cfg.num_heads, requires_grad=True)
    keys, _ = cache.update(0, k, k)
    assert torch.equal(cache.k, before) and keys.requires_grad and keys.shape[1] == 2 * 64
    with torch.no_grad():
        plain, _ = model.new_cache(2).update(0, k, k)
    assert torch.equal(keys, plain) and cache.nbytes() == nbytes


def test_wans_fields_are_recorded_for_wan_only_and_checked():
    """A DiT's recorded config is what it was before Wan's fields existed; Wan's fields on a DiT, a Wan without a text
    encoder or with labels, and an unknown positions mode are refused in one line each."""
    from ca2vdm.config import WAN_FIELDS, ModelConfig, model_config, to_dict, validate_model
    from ca2vdm.errors import ConfigError

    assert not set(WAN_FIELDS) & set(to_dict(model_config("demo"))) and "arch" not in to_dict(model_config("demo"))
    recorded = to_dict(model_config("wan-1.3b"))
    assert set(WAN_FIELDS) <= set(recorded) and recorded["width"] == 104 and recorded["positions"] == "absolute"
    assert model_config("wan-1.3b").frame_width == 104 and model_config("demo").frame_width == 32
    for fields, message in [(dict(positions="absolute"), "model.positions='absolute' applies to model.arch=wan only"),
                            (dict(arch="wan", ffn_dim=32), "model.arch=wan reads prompts"),
                            (dict(arch="wan", ffn_dim=32, text_encoder="wordllama", text_dim=256, num_classes=3),
                             "takes prompts, not labels"),
                            (dict(arch="wan", ffn_dim=32, text_encoder="wordllama", text_dim=256, positions="rope"),
                             "model.positions='rope' must be one of absolute, ring")]:
        with pytest.raises(ConfigError, match=message):
            validate_model(ModelConfig(**fields))
