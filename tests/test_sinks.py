"""Attention sinks (model.sink_frames): never evicted, always at a trained position, exact against recomputation."""
import numpy as np
import pytest
import torch

from ca2vdm.config import model_config
from ca2vdm.errors import ConfigError, SettingError
from ca2vdm.models.attention import apply_rope, rope_table
from ca2vdm.models.kv_cache import KVCache
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model


def test_sink_frames_must_be_whole_chunks_inside_the_window():
    assert model_config("tiny", sink_frames=1).sink_frames == 1  # frame 0: the first-frame chunk
    assert model_config("tiny", sink_frames=3).sink_frames == 3  # frame 0 and the chunk after it
    for bad in (2, 5, -1):  # splits a chunk; fills the whole window; negative
        with pytest.raises(ConfigError, match="sink_frames"):
            model_config("tiny", sink_frames=bad)


@pytest.mark.parametrize("sinks", [1, 3])
def test_sinks_survive_any_number_of_chunks_at_positions_in_range(sinks):
    """Over 200 chunks: the sinks stay visible, the ring holds the last max_context - k committed frames, and the
    visible keys sit at one contiguous run of positions ending at the chunk (the training layout), so no
    query-key distance ever exceeds window - 1. A key's position is read back from its rotary phase."""
    max_context, chunk, head_dim = 5, 2, 4
    period = max_context + 2 * chunk
    cos, sin = rope_table(head_dim, period)
    cache = KVCache(depth=1, batch=1, tokens=1, heads=1, head_dim=head_dim, max_context_frames=max_context,
                    chunk_frames=chunk, sink_frames=sinks, rope=(cos, sin))
    unit = torch.tensor([0.0, 1.0, 0.0, 0.0])  # channel pair 1 rotates at 2*pi/period per frame
    frame = 0
    for index in range(200):
        length = 1 if index == 0 else chunk
        frames = torch.arange(frame, frame + length)
        keys = apply_rope(unit.expand(1, length, head_dim), cos[frames % period], sin[frames % period])
        values = frames.float()[None, :, None].expand(1, length, head_dim)
        k, v = cache.update(0, keys, values)  # what the chunk's queries see
        end = frame + length
        seen = v[0, :, 0].long().tolist()
        recent = range(max(sinks, end - (max_context + chunk - sinks)), end)
        assert sorted(seen) == sorted(set(range(min(sinks, end))) | set(recent))
        phase = torch.atan2(k[0, :, 3], k[0, :, 1]) * period / (2 * torch.pi)  # position mod period
        position = {f: round(p.item()) % period for f, p in zip(seen, phase)}
        run = [(end - len(seen) + i) % period for i in range(len(seen))]
        assert [position[f] for f in sorted(seen)] == run  # sinks first, then the ring, contiguous up to the chunk
        assert len(seen) <= max_context + chunk
        cache.commit(length)
        frame = end
    assert cache.frames_committed == 1 + 199 * chunk


@pytest.mark.parametrize("overrides", [dict(sink_frames=1), dict(sink_frames=3), dict(sink_frames=1, prefix_frames=2),
                                       dict(sink_frames=2, first_frame_chunk=False, max_context_frames=6)])
def test_cached_equals_recomputed_with_sinks_far_past_the_window(overrides):
    """With one layer a committed frame's keys depend on that frame alone, so the KV cache with sinks must equal
    recomputing [sinks | last max_context - k frames | chunk] at every step for any number of chunks."""
    model = random_model(num_classes=3, depth=1, **overrides)
    kw = dict(batch=2, label=1, seed=4)
    videos = {}
    for mode in ("kv", "none"):
        pipe = LongVideoPipeline(model, steps=2, cfg_scale=2.0, cache=mode)
        videos[mode] = torch.cat([c.frames for c in pipe.generate(12, **kw)], dim=2)  # 4x the window
    assert videos["kv"].shape[2] == (23 if model.cfg.first_frame_chunk else 24)
    assert (videos["kv"] - videos["none"]).abs().max() <= 1e-4
    assert videos["kv"].abs().max() > 0.05


def test_cached_equals_recomputed_with_sinks_while_the_window_fills():
    """Two layers: kv == none == full until the window is full (as without sinks), with guidance rows batched."""
    model = random_model(num_classes=3, sink_frames=3, prefix_frames=1)
    out = {}
    for mode in ("kv", "none", "full"):
        pipe = LongVideoPipeline(model, steps=3, cfg_scale=2.5, cache=mode)
        out[mode] = torch.cat([c.frames for c in pipe.generate(4, batch=2, label=2, seed=1)], dim=2)
    assert (out["kv"] - out["none"]).abs().max() <= 1e-4 and (out["kv"] - out["full"]).abs().max() <= 1e-4


def test_sinks_change_the_video_only_once_frames_are_evicted():
    """Same weights with and without a sink: identical while nothing is evicted, different after."""
    videos = []
    for sinks in (0, 1):
        model = random_model(sink_frames=sinks)
        pipe = LongVideoPipeline(model, steps=2, cache="kv")
        videos.append(torch.cat([c.frames for c in pipe.generate(7, seed=2)], dim=2))
    per_frame = (videos[0] - videos[1]).abs().amax(dim=(0, 1, 3, 4))
    assert per_frame[:7].max() == 0  # frames 0..6: the window (5) plus a chunk never overflows
    assert per_frame[7:].max() > 1e-4


def test_training_clips_start_with_the_sinks(tmp_path):
    """The dataset gives clips laid out as the cache sees them: the video's first k frames, then a later run."""
    from ca2vdm.data.clips import VideoFolderDataset
    from ca2vdm.data.synthetic import write_dataset

    write_dataset(tmp_path, num_videos=2, num_frames=40, size=16, seed=0)
    data = VideoFolderDataset(tmp_path, num_frames=7, frame_stride=2, resolution=16, sink_frames=3,
                              clips_per_video=20)
    starts = set()
    for i in range(len(data)):
        indices = data.clip_indices(data.clip_position(i), 40)
        assert indices[:3] == [0, 2, 4] and len(indices) == 7 and indices[-1] <= 39
        assert indices[3:] == list(range(indices[3], indices[3] + 8, 2))  # the run after the sinks is contiguous
        starts.add(indices[3])
    assert min(starts) == 6 and max(starts) > 20  # from right after the sinks to deep into the video
    assert data[0]["video"].shape == (3, 7, 16, 16)
    # about CONTIGUOUS_SHARE of the clips are the video's first frames, and say so; the others say they are not
    flags = [bool(data[i]["contiguous"]) for i in range(len(data))]
    assert flags == [data.clip_indices(data.clip_position(i), 40) == list(range(0, 14, 2)) for i in range(len(data))]
    assert 0.3 < np.mean(flags) < 0.7


def test_clips_without_sinks_are_unchanged_and_contiguous(tmp_path):
    """The share of contiguous clips draws nothing without sinks: clip positions stay those of earlier versions."""
    from ca2vdm.data.clips import VideoFolderDataset
    from ca2vdm.data.synthetic import write_dataset

    write_dataset(tmp_path, num_videos=2, num_frames=40, size=16, seed=0)
    data = VideoFolderDataset(tmp_path, num_frames=7, resolution=16, clips_per_video=5)
    assert [data.clip_position(i) for i in range(3)] == [np.random.default_rng([0, 0, i]).random() for i in range(3)]
    assert all(data[i]["contiguous"] for i in range(len(data)))


def test_chunks_before_the_window_fills_train_only_on_clips_that_start_at_the_sinks():
    """Inference shows a sink with a partly filled ring only at the start of a video, right after the sinks; after a
    gap only the chunk whose context fills the window is a layout the model meets."""
    from ca2vdm.config import ModelConfig
    from ca2vdm.training.diffusion_task import chunk_weights

    cfg = ModelConfig(name="demo", sink_frames=1)  # chunks start at frames 0, 1, 5, 9; window 9
    chunks = cfg.layout.clip_chunks(cfg.clip_frames)
    weights = chunk_weights(chunks, torch.tensor([True, False]), cfg)
    assert weights.tolist() == [[1, 1, 1, 1], [0, 0, 0, 1]]


def test_sinks_as_a_sampler_setting_are_the_models_own():
    """sink_frames chosen at sampling (training-free) samples exactly as a model built with those sinks; sink_rope
    original leaves the sinks at the positions they were written at: the same video until the ring wraps, another
    after; bad settings are refused in one line."""
    videos = {}
    for name, model, settings in (("model", random_model(sink_frames=3), {}),
                                  ("setting", random_model(), {"sink_frames": 3}),
                                  ("original", random_model(), {"sink_frames": 3, "sink_rope": "original"})):
        pipe = LongVideoPipeline(model, steps=2, cache="kv", **settings)
        videos[name] = torch.cat([c.frames for c in pipe.generate(8, seed=2)], dim=2)
    assert torch.equal(videos["model"], videos["setting"])
    per_frame = (videos["setting"] - videos["original"]).abs().amax(dim=(0, 1, 3, 4))
    assert per_frame[:7].max() == 0 and per_frame[7:].max() > 1e-4  # the ring first wraps at frame 7
    no_sinks = LongVideoPipeline(random_model(sink_frames=3), steps=2, sink_frames=0)
    assert no_sinks.sinks == 0 and torch.equal(torch.cat([c.frames for c in no_sinks.generate(8, seed=2)], dim=2),
                                               torch.cat([c.frames for c in LongVideoPipeline(
                                                   random_model(), steps=2).generate(8, seed=2)], dim=2))
    with pytest.raises(SettingError, match="sink_frames=2: must be whole chunks from the first frame"):
        LongVideoPipeline(random_model(), sink_frames=2)
    with pytest.raises(SettingError, match="sink_rope=original: places the sinks of the KV cache: needs cache kv"):
        LongVideoPipeline(random_model(), sink_frames=1, sink_rope="original", cache="none")
