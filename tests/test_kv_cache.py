import pytest
import torch

from ca2vdm.models.kv_cache import KVCache
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model


def closed_form_nbytes(cfg, rows: int, bytes_per_value: int = 4) -> int:
    """What a cache of ``rows`` sequences holds, from the model's sizes alone: K and V of every layer for each slot
    of the window (max_context_frames + chunk_frames), the sinks' unrotated keys, K and V of the prefix frames; a
    frame is (resolution / patch_size)^2 tokens of hidden_size values."""
    tokens = (cfg.resolution // cfg.patch_size) ** 2
    frames = 2 * (cfg.max_context_frames + cfg.chunk_frames) + cfg.sink_frames + 2 * cfg.prefix_frames
    return cfg.depth * rows * tokens * cfg.hidden_size * frames * bytes_per_value


@pytest.mark.parametrize("rows, sizes", [(1, {}), (2, {"prefix_frames": 2}), (3, {"sink_frames": 1}),
                                         (2, {"prefix_frames": 1, "sink_frames": 3, "max_context_frames": 7})])
def test_nbytes_is_what_the_sizes_say(rows, sizes):
    model = random_model(**sizes)
    assert model.new_cache(rows).nbytes() == closed_form_nbytes(model.cfg, rows)
    assert model.new_cache(rows, dtype=torch.bfloat16).nbytes() == closed_form_nbytes(model.cfg, rows, 2)


def test_ring_slots_and_visible_window():
    cache = KVCache(depth=1, batch=1, tokens=1, heads=1, head_dim=2, max_context_frames=4, chunk_frames=2)
    frame = lambda f: torch.full((1, 1, 2), float(f))
    k = torch.cat([frame(0), frame(1)], dim=1)
    keys, _ = cache.update(0, k, k)
    assert keys.shape[1] == 2  # nothing committed: only the chunk itself
    cache.commit(2)
    for f in range(2, 12, 2):
        k = torch.cat([frame(f), frame(f + 1)], dim=1)
        keys, _ = cache.update(0, k, k)
        cache.commit(2)
        visible = sorted(keys[0, :, 0].tolist())
        assert visible == list(range(max(0, f - 4), f + 2))  # last 4 committed frames + the chunk
    with pytest.raises(ValueError, match="does not fit"):
        cache.update(0, torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))


def test_cache_written_once_per_chunk_and_never_reallocated():
    model = random_model(num_classes=3, prefix_frames=2)
    pipe = LongVideoPipeline(model, steps=3, cfg_scale=2.0, cache="kv")
    state = pipe.start(label=0, seed=0)
    pipe.next_chunk(state)
    branches = [state.conditioning]  # guidance rows share one cache
    storages = [(b.cache.k.data_ptr(), b.cache.v.data_ptr(), b.cache.prefix_k.data_ptr()) for b in branches]
    # 2 layers x 2 rows (both guidance branches) x 16 tokens x 32 values x (2 x 7 window slots + 2 x 2 prefix frames)
    assert [b.cache.nbytes() for b in branches] == [closed_form_nbytes(model.cfg, 2)] == [147456]
    for n in range(2, 9):
        pipe.next_chunk(state)
        for b in branches:
            assert b.cache.commits == n  # one commit per finished chunk, not one per denoising step
    assert [(b.cache.k.data_ptr(), b.cache.v.data_ptr(), b.cache.prefix_k.data_ptr()) for b in branches] == storages
    assert [b.cache.nbytes() for b in branches] == [closed_form_nbytes(model.cfg, 2)]


def test_bounded_over_many_chunks():
    model = random_model()
    pipe = LongVideoPipeline(model, steps=1, cache="kv")
    state = pipe.start(seed=0)
    first = pipe.next_chunk(state)
    cache = state.conditioning.cache
    ptr = cache.k.data_ptr()
    assert cache.nbytes() == closed_form_nbytes(model.cfg, 1) == 57344  # 2 x 1 x 16 x 32 x (2 x 7) x 4
    for _ in range(199):
        assert torch.isfinite(pipe.next_chunk(state).frames).all()
    assert cache.nbytes() == closed_form_nbytes(model.cfg, 1) and cache.k.data_ptr() == ptr
    assert cache.frames_committed == 1 + 199 * model.cfg.chunk_frames
    assert first.frames.shape[2] == 1  # first-frame chunk


def test_row_view_gives_the_conditional_half_of_a_batched_pass():
    model = random_model(num_classes=3, prefix_frames=1)
    cache = model.new_cache(2)
    y = torch.tensor([1, 3])  # conditional row, null-label row
    frames = torch.randn(1, 3, 3, 16, 16).repeat(2, 1, 1, 1, 1)
    for start, length in ((0, 1), (1, 2)):
        model(frames[:, :, start:start + length], torch.zeros(2, length), y, cache=cache, commit=True)
        cache.commit(length)
    x = torch.randn(1, 3, 2, 16, 16)
    both = model(x.repeat(2, 1, 1, 1, 1), torch.full((2, 2), 0.5), y, cache=cache)
    cond = model(x, torch.full((1, 2), 0.5), y[:1], cache=cache.rows(1))
    assert (cond - both[:1]).abs().max() <= 1e-5
    assert (both[0] - both[1]).abs().max() > 1e-3  # the rows really differ
