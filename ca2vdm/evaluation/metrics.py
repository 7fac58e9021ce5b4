"""Video quality and drift metrics: PSNR, SSIM, colour histograms, sharpness, motion, foreground fraction and shape.

Every function takes a video in either repository convention: uint8 frames shaped (..., T, H, W, 3) (numpy or
torch), or a float tensor shaped (..., C, T, H, W) in [-1, 1] with C = 1 or 3. Leading dimensions (a batch) are
folded into the frames. Internally pixels are floats in [0, 1], so PSNR and the per-pixel metrics do not depend on
which convention the video came in. PSNR and SSIM are torchmetrics'.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

Video = np.ndarray | torch.Tensor
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def to_frames(video: Video) -> torch.Tensor:
    """(N, C, H, W) float32 CPU frames in [0, 1] from a uint8 (..., T, H, W, 3) or float (..., C, T, H, W) video."""
    video = torch.from_numpy(np.array(video)) if isinstance(video, np.ndarray) else video.detach().cpu()
    if video.ndim < 4:
        raise ValueError(f"expected a video with at least 4 dimensions, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        if video.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be (..., T, H, W, 3), got shape {tuple(video.shape)}")
        return rearrange(video.float() / 255, "... h w c -> (...) c h w")
    if not video.is_floating_point() or video.shape[-4] not in (1, 3):
        raise ValueError(f"float videos must be (..., C, T, H, W) with C = 1 or 3 in [-1, 1], "
                         f"got {video.dtype} {tuple(video.shape)}")
    return rearrange((video.float() + 1) / 2, "... c t h w -> (... t) c h w")


def time_slice(video: Video, start: int, stop: int) -> Video:
    """Frames ``start .. stop - 1`` of a video in either convention: (..., T, H, W, 3) uint8 or (..., C, T, H, W)."""
    if video.dtype in (np.uint8, torch.uint8):
        return video[..., start:stop, :, :, :]
    return video[..., start:stop, :, :]


def ratio(value: float, reference: float) -> float:
    """value / reference; NaN (printed as nan, a goal failed) where the reference is 0, e.g. a chunk without a shape
    or without motion."""
    return value / reference if reference else math.nan


def _gray(frames: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of (N, C, H, W) frames."""
    return frames if frames.shape[1] == 1 else torch.einsum("nchw,c->nhw", frames, _LUMA)[:, None]


def _pair(a: Video, b: Video) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = to_frames(a), to_frames(b)
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {tuple(a.shape)} vs {tuple(b.shape)} (as N, C, H, W frames)")
    return a, b


def psnr(a: Video, b: Video) -> float:
    """Peak signal-to-noise ratio in dB over the whole video (one MSE over all frames; torchmetrics); ``inf`` if
    identical."""
    a, b = _pair(a, b)
    return peak_signal_noise_ratio(b, a, data_range=1.0).item()


def ssim(a: Video, b: Video, window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity (torchmetrics: Gaussian window, per channel); 1 for identical videos.

    The window shrinks to the frame size (kept odd) for frames smaller than ``window``.
    """
    a, b = _pair(a, b)
    size = min(window, *a.shape[2:])
    size -= 1 - size % 2
    return structural_similarity_index_measure(b, a, data_range=1.0, kernel_size=size, sigma=sigma).item()


def color_histogram(video: Video, bins: int = 16) -> np.ndarray:
    """Per-channel histogram of all pixels, (3, bins), each row summing to 1."""
    frames = to_frames(video).expand(-1, 3, -1, -1)
    index = (frames * bins).long().clamp(0, bins - 1)  # (N, 3, H, W)
    counts = torch.stack([torch.bincount(index[:, ch].flatten(), minlength=bins) for ch in range(3)])
    return (counts / counts.sum(dim=1, keepdim=True)).numpy()


def _tv(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(h1 - h2).sum(axis=-1).mean(axis=-1)


def histogram_distance(h1: np.ndarray, h2: np.ndarray) -> float:
    """Total-variation distance between per-channel histograms, averaged over channels: 0 same, 1 disjoint."""
    if h1.shape != h2.shape:
        raise ValueError(f"histograms differ in shape: {h1.shape} vs {h2.shape}")
    return float(_tv(h1, h2))


def histogram_distances(h: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(N,) :func:`histogram_distance` from ``h`` (3, bins) to every histogram of ``bank`` (N, 3, bins)."""
    if bank.ndim != 3 or bank.shape[1:] != h.shape or len(bank) == 0:
        raise ValueError(f"bank must be a non-empty (N, {', '.join(map(str, h.shape))}) array, got {bank.shape}")
    return _tv(bank, h)


def nearest_histogram_distance(h: np.ndarray, bank: np.ndarray) -> float:
    """Smallest :func:`histogram_distance` from ``h`` (3, bins) to any histogram of ``bank`` (N, 3, bins)."""
    return float(histogram_distances(h, bank).min())


def sharpness(video: Video) -> float:
    """Root-mean-square gradient of the luma (forward differences, pixel values in [0, 1]).

    Blurring spreads an edge over more pixels with smaller steps, which lowers the squared gradient (the mean
    gradient magnitude would not change: it is the total variation, which blur preserves)."""
    gray = _gray(to_frames(video))[:, 0]
    dx, dy = gray[:, :-1, 1:] - gray[:, :-1, :-1], gray[:, 1:, :-1] - gray[:, :-1, :-1]
    return torch.sqrt((dx**2 + dy**2).mean()).item()


def motion(video: Video) -> float:
    """Mean absolute change between consecutive frames (pixel values in [0, 1]); NaN for a single frame.

    Pass one video: a batch dimension would count the step from one video to the next."""
    frames = to_frames(video)
    return (frames[1:] - frames[:-1]).abs().mean().item() if len(frames) > 1 else math.nan


def foreground_mask(frames: torch.Tensor, margin: float) -> torch.Tensor:
    """(N, H, W) bool: pixels of (N, C, H, W) frames whose brightness (largest channel) exceeds their frame's median
    by ``margin``."""
    bright = frames.amax(dim=1)  # (N, H, W)
    background = bright.flatten(1).median(dim=1).values[:, None, None]
    return bright > background + margin


def foreground_fraction(video: Video, margin: float = 0.25) -> float:
    """Fraction of pixels clearly brighter than the background.

    Brightness is the largest channel; a frame's background brightness is its median (the background covers
    most of the frame), and a pixel is foreground when it exceeds that by more than ``margin``.
    """
    return foreground_mask(to_frames(video), margin).float().mean().item()


def foreground_colour(video: Video, margin: float = 0.25) -> np.ndarray:
    """(3,) mean colour in [0, 1] of the foreground pixels (as :func:`foreground_fraction`) of all frames; NaN where
    there are none (the shape vanished)."""
    frames = to_frames(video)  # (N, C, H, W)
    mask = foreground_mask(frames, margin)  # (N, H, W)
    if not mask.any():
        return np.full(frames.shape[1], math.nan)
    return rearrange(frames, "n c h w -> c (n h w)")[:, mask.flatten()].mean(dim=1).numpy()


def shape_descriptor(video: Video, margin: float = 0.25) -> np.ndarray:
    """(fill, aspect) of the foreground (as :func:`foreground_fraction`) averaged over the frames that have one:
    fill = foreground pixels / bounding-box area (disc ~0.79, square ~1, upright triangle ~0.5), aspect = box
    width / height; both independent of position and size. NaN where no frame has 4 foreground pixels."""
    features = []
    for mask in foreground_mask(to_frames(video), margin):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(ys) >= 4:
            height, width = (ys.max() - ys.min() + 1).item(), (xs.max() - xs.min() + 1).item()
            features.append((len(ys) / (height * width), width / height))
    return np.mean(features, axis=0) if features else np.full(2, math.nan)


def shape_colour(made: torch.Tensor, real: torch.Tensor) -> dict:
    """Hue error and per-channel difference of the shape's colour (:func:`foreground_colour`), made - real, between
    two batches of (B, 3, T, H, W) videos in [-1, 1], the mean over the videos where both show the shape (None where
    none does). Hue error: half the L1 distance of the chromaticities r, g, b / (r + g + b), 0 = the same hue,
    1 = disjoint; channels: pixels in [0, 1]."""
    pairs = np.array([(foreground_colour(m), foreground_colour(r)) for m, r in zip(made, real)])  # (B, 2, 3)
    pairs = pairs[~np.isnan(pairs).any(axis=(1, 2))]  # (V, 2, 3): made, real
    if not len(pairs):
        return {"hue_error": None, "red": None, "green": None, "blue": None, "shapes": 0}
    chroma = pairs / pairs.sum(axis=2, keepdims=True)
    hue_error = np.abs(chroma[:, 0] - chroma[:, 1]).sum(axis=1).mean() / 2
    red, green, blue = (pairs[:, 0] - pairs[:, 1]).mean(axis=0)
    return {"hue_error": float(hue_error), "red": float(red), "green": float(green), "blue": float(blue),
            "shapes": len(pairs)}
