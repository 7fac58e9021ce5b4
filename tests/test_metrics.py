import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ca2vdm.data.synthetic import render_shape_video
from ca2vdm.evaluation.metrics import (
    color_histogram,
    foreground_colour,
    foreground_fraction,
    histogram_distance,
    motion,
    nearest_histogram_distance,
    psnr,
    shape_descriptor,
    sharpness,
    ssim,
    to_frames,
)


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    """(T, H, W, 3) uint8 training-like clip: a moving circle."""
    return render_shape_video(np.random.default_rng(0), 6, 32, "circle")


def _noisy(video: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, std, video.shape)
    return np.clip(video + noise, 0, 255).round().astype(np.uint8)


def _as_float(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1


def test_both_conventions_give_the_same_frames(video):
    assert torch.allclose(to_frames(video), to_frames(_as_float(video)), atol=1e-6)
    assert to_frames(_as_float(video)[None]).shape == (6, 3, 32, 32)  # a batch dimension is folded in
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_frames(torch.zeros(4, 6, 32, 32))


def test_psnr(video):
    assert psnr(video, video) == math.inf
    low, high = psnr(video, _noisy(video, 4)), psnr(video, _noisy(video, 16))
    assert 30 < low < 40 and high < low - 6
    assert psnr(video, _noisy(video, 16)) == pytest.approx(psnr(_as_float(video), _as_float(_noisy(video, 16))),
                                                           rel=1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(video, video[:3])


def test_ssim(video):
    assert ssim(video, video) == pytest.approx(1.0, abs=1e-5)
    slight, strong = ssim(video, _noisy(video, 4)), ssim(video, _noisy(video, 32))
    assert strong < slight < 0.99
    tiny = video[:, :8, :8]  # smaller than the window: the window shrinks
    assert ssim(tiny, tiny) == pytest.approx(1.0, abs=1e-5) and ssim(tiny, _noisy(tiny, 32)) < 0.9


def test_histogram_distance(video):
    h = color_histogram(video)
    assert h.shape == (3, 16) and np.allclose(h.sum(axis=1), 1)
    assert histogram_distance(h, color_histogram(video)) == 0
    recoloured = video[..., ::-1]  # RGB -> BGR: red shape becomes blue
    assert histogram_distance(h, color_histogram(recoloured)) > 0.05
    bank = np.stack([color_histogram(recoloured), h])
    assert nearest_histogram_distance(h, bank) == 0
    assert nearest_histogram_distance(h, bank[:1]) == pytest.approx(histogram_distance(h, bank[0]))


def test_sharpness_drops_when_blurred(video):
    frames = _as_float(video).permute(1, 0, 2, 3)  # (T, 3, H, W)
    blurred = F.avg_pool2d(frames, 3, stride=1, padding=1, count_include_pad=False).permute(1, 0, 2, 3)
    assert sharpness(blurred) < 0.8 * sharpness(video)
    assert sharpness(np.zeros_like(video)) == 0


def test_motion(video):
    assert motion(np.repeat(video[:1], 4, axis=0)) == 0  # frozen
    assert motion(video) > 0
    assert motion(video[::2]) > motion(video)  # skipping frames: faster motion
    assert math.isnan(motion(video[:1]))


def test_foreground_fraction_of_a_known_square():
    frame = np.empty((1, 32, 32, 3), np.uint8)
    frame[:] = (12, 25, 8)  # dark tinted background
    frame[0, 4:12, 10:18] = (40, 200, 60)  # 8 x 8 green square
    assert foreground_fraction(frame) == 64 / 1024
    assert foreground_fraction(_as_float(frame)) == 64 / 1024
    assert foreground_fraction(frame // 8) == 0  # too dim to count as foreground


def test_foreground_colour_is_the_shapes_colour():
    frame = np.empty((2, 32, 32, 3), np.uint8)
    frame[:] = (12, 25, 8)
    frame[0, 4:12, 10:18] = (40, 200, 60)  # the shape moves and changes colour between the two frames
    frame[1, 20:28, 2:10] = (240, 210, 30)
    np.testing.assert_allclose(foreground_colour(frame), np.array([140, 205, 45]) / 255, atol=1e-6)
    np.testing.assert_allclose(foreground_colour(_as_float(frame[:1])), np.array([40, 200, 60]) / 255, atol=1e-2)
    assert np.isnan(foreground_colour(frame // 8)).all()  # no shape, no colour


def test_shape_descriptor_separates_the_classes_at_any_size_and_place():
    """fill of the bounding box: disc ~0.79, square ~1, triangle ~0.5, whatever the radius, colour and position."""
    fills = {shape: [shape_descriptor(render_shape_video(np.random.default_rng(seed), 3, 32, shape))[0]
                     for seed in range(6)] for shape in ("circle", "square", "triangle")}
    assert max(fills["triangle"]) < 0.6 < min(fills["circle"]) <= max(fills["circle"]) < 0.9 < min(fills["square"])
    blank = np.full((2, 32, 32, 3), 10, np.uint8)
    assert np.isnan(shape_descriptor(blank)).all()  # no shape, no descriptor
