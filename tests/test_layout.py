"""ca2vdm/config/layout.py: the one rule that splits frames into chunks, against the rule written out by hand, and the
one rule that maps a codec's frames to pixel frames."""
import pytest
import torch

from ca2vdm.config import ChunkLayout, TemporalCompression, model_config


def by_hand(frame: int, L: int, first_frame_chunk: bool) -> int:
    if first_frame_chunk:
        return 0 if frame == 0 else (frame - 1) // L + 1
    return frame // L


@pytest.mark.parametrize("L, first", [(1, True), (2, True), (4, True), (1, False), (3, False)])
def test_chunk_numbers_starts_and_boundaries(L, first):
    layout = ChunkLayout(L, first)
    frames = torch.arange(40)
    assert layout.chunk_of(frames).tolist() == [by_hand(f, L, first) for f in range(40)]  # tensors and ints alike
    for f in range(40):
        chunk = by_hand(f, L, first)
        assert layout.chunk_of(f) == chunk
        assert layout.start_of(chunk) <= f < layout.start_of(chunk + 1)
        assert layout.is_boundary(f) == (f == layout.start_of(chunk))
        assert layout.floor(f) == layout.start_of(chunk)


def test_lengths_spans_and_training_clips():
    layout = ChunkLayout(4, True)
    assert layout.next_length(0) == 1 and layout.next_length(1) == 4 and layout.next_length(3) == 4
    assert layout.split(0, 10) == [1, 4, 4, 1] and layout.split(1, 8) == [4, 4] and layout.split(5, 0) == []
    assert layout.spans(3, 7) == [(0, 2), (2, 6), (6, 7)]  # frames 3-4 | 5-8 | 9, relative to frame 3
    assert layout.clip_chunks(13) == [(0, 1), (1, 4), (5, 4), (9, 4)]
    assert ChunkLayout(2, False).clip_chunks(6) == [(0, 2), (2, 2), (4, 2)]


def test_the_model_config_carries_its_layout_and_validates_by_it():
    cfg = model_config("demo")
    assert cfg.layout == ChunkLayout(4, True) and cfg.layout.is_boundary(cfg.max_context_frames)
    with pytest.raises(ValueError, match="max_context_frames=8 must be 1 \\+ k \\* chunk_frames"):
        model_config("demo", max_context_frames=8)
    with pytest.raises(ValueError, match="sink_frames=2 must be 0 \\(off\\) or whole chunks"):
        model_config("demo", sink_frames=2)


def test_temporal_compression_maps_latent_frames_to_pixel_frames():
    """Wan's VAE: latent frame 0 is one pixel frame, later ones 4 (7 chunks of 3 = 81 frames); per-frame codecs: 1."""
    wan, frames = TemporalCompression(4), TemporalCompression()
    assert [wan.start_of(n) for n in range(4)] == [0, 1, 5, 9] and wan.pixel_frames(0, 3) == 9
    assert wan.pixel_frames(3, 6) == 12 and wan.pixel_frames(0, 21) == 81
    assert [wan.latents_in(p) for p in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    assert [frames.start_of(n) for n in range(4)] == [0, 1, 2, 3] and frames.latents_in(7) == 7
    assert all(frames.pixel_frames(a, b) == b - a for a in range(5) for b in range(a, 9))
