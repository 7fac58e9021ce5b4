"""Video and image reading, and the shared resize/normalise step (writing: :mod:`ca2vdm.io.video_writer`,
whose names are importable from here too).

Conventions: uint8 frames are numpy arrays shaped (T, H, W, 3); model-side
videos are float tensors shaped (C, T, H, W) in [-1, 1].
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import av
import decord
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from ca2vdm.io.bounded import check_frame_size, check_video_frames, decode_image
from ca2vdm.io.paths import check_input_file
from ca2vdm.io.video_writer import KEYFRAME_INTERVAL, VideoWriter, save_contact_sheet  # noqa: F401 (re-exported)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_DECODE_ERRORS = (RuntimeError, decord.DECORDError)
UNREADABLE = "damaged, truncated or not a video file"


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Convert a (C, T, H, W) float video in [-1, 1] (C = 1 or 3) to (T, H, W, 3) uint8."""
    if video.ndim != 4 or video.shape[0] not in (1, 3):
        raise ValueError(
            f"to_uint8 expects a (C, T, H, W) tensor with C = 1 or 3, got shape {tuple(video.shape)}"
        )
    video = video.detach().float().cpu()
    if video.shape[0] == 1:
        video = repeat(video, "1 t h w -> c t h w", c=3)
    pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, T, H, W)
    return rearrange(pixels, "c t h w -> t h w c").numpy()


def _as_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, C), (T, H, W) or (H, W) uint8 -> a (T, H, W, 3) uint8 tensor (a view where possible)."""
    if not isinstance(frames, torch.Tensor):
        frames = torch.from_numpy(np.require(frames, requirements="W"))  # copy only if read-only
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got dtype {frames.dtype}; convert with to_uint8 first")
    if frames.ndim == 2:  # one grayscale frame (H, W)
        frames = rearrange(frames, "h w -> 1 h w 1")
    elif frames.ndim == 3:  # grayscale frames (T, H, W)
        frames = rearrange(frames, "t h w -> t h w 1")
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"expected frames shaped (T, H, W, C) with C in 1/3/4, (T, H, W) or (H, W); "
            f"got {tuple(frames.shape)}"
        )
    frames = frames[..., :3]  # drop alpha
    return repeat(frames, "t h w 1 -> t h w c", c=3) if frames.shape[-1] == 1 else frames


def _uint8_to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, C), (T, H, W) or (H, W) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return rearrange(_as_frames(frames).float().div_(127.5).sub_(1.0), "t h w c -> c t h w")


def resize_center_crop(frames: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Center-crop to the aspect ratio of `size` and resize to it: `size` is (height, width), or one side of a square.

    Takes uint8 frames (numpy or torch) shaped (T, H, W, C) with C in 1/3/4,
    grayscale (T, H, W), or a single grayscale frame (H, W). Returns a
    (3, T, height, width) float32 tensor in [-1, 1]. Resizing is bilinear with
    antialiasing. Frames are cropped before they are converted to float, which
    keeps the float copy (the peak memory of decoding a video) small.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    frames = _as_frames(frames)  # (T, H, W, 3)
    height, width = frames.shape[1:3]
    scale = min(height / out_h, width / out_w)  # the largest crop of the target's aspect ratio
    crop_h, crop_w = min(height, round(out_h * scale)), min(width, round(out_w * scale))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    video = _uint8_to_float(frames[:, top : top + crop_h, left : left + crop_w])  # (3, T, crop_h, crop_w)
    if (crop_h, crop_w) == (out_h, out_w):
        return video.contiguous()
    resized = F.interpolate(
        rearrange(video, "c t h w -> t c h w"),
        size=(out_h, out_w),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )  # (T, 3, out_h, out_w)
    return rearrange(resized, "t c h w -> c t h w").clamp(-1, 1).contiguous()


@contextmanager
def _native_logs_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while decord works on a file: its C++ log ("ERROR opening: ...") and
    FFmpeg's ("moov atom not found") would otherwise print raw lines before the caller's own message."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_video(path: str | os.PathLike) -> decord.VideoReader:
    """Open a video with decord, raising ValueError naming the file if it cannot be opened."""
    path = check_input_file(path)
    try:  # decord reports every failure alike; say plainly when the file itself cannot be read
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as error:
        fix = "fix its permissions (e.g. chmod a+r)" if isinstance(error, PermissionError) else "check the disk"
        raise ValueError(
            f"cannot read video {path}: {error.strerror or error}; {fix} or move it out of the folder"
        ) from error
    if not head:
        raise ValueError(f"video {path} is empty (0 bytes); delete it or replace it with the full file")
    check_video_frames(path)  # from the header, before anything is decoded
    try:
        with _native_logs_silenced():
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except _DECODE_ERRORS as error:  # decord's message is about its own sources, not the file: leave it out
        raise ValueError(f"cannot open video {path}: not a readable video ({UNREADABLE})") from error
    if len(reader) == 0:
        raise ValueError(f"video {path} contains no frames")
    return reader


def _av_problem(error: Exception) -> str:
    """What went wrong, without FFmpeg's error number and the repeated file name."""
    if isinstance(error, IndexError):
        return "it has no video stream"
    return f"{getattr(error, 'strerror', None) or 'not a readable video'} ({UNREADABLE})"


def _decode_with_pyav(path: Path, indices: list[int]) -> np.ndarray:
    """Decode frames `indices` (presentation order) by decoding from the start."""
    wanted = set(indices)
    found: dict[int, np.ndarray] = {}
    decoded = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if decoded in wanted:
                    found[decoded] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                decoded += 1
                if len(found) == len(wanted):
                    break
    except (av.FFmpegError, IndexError) as error:
        raise ValueError(f"cannot decode video {path}: {_av_problem(error)}") from error
    missing = sorted(wanted - found.keys())
    if missing:
        raise ValueError(f"video {path} has no frame {missing[0]}: only {decoded} frames decode")
    return np.stack([found[i] for i in indices])


def read_frames(
    path: str | os.PathLike, indices: Sequence[int], reader: decord.VideoReader | None = None
) -> np.ndarray:
    """Decode frames `indices` of a video as (T, H, W, 3) uint8.

    Uses decord (pass an open `reader` to reuse it) and falls back to PyAV when
    decord fails or returns a wrong shape, which decord 0.6 does for some frame
    widths (e.g. 16 or 72 px, dmlc/decord#336). Raises ValueError naming the file.
    """
    path, indices = Path(path), [int(i) for i in indices]
    if not indices:
        raise ValueError(f"no frame indices given for {path}")
    reader = open_video(path) if reader is None else reader
    try:
        with _native_logs_silenced():
            batch = reader.get_batch(indices)
        # decord's bridge is left native (NDArray); tolerate a bridge set elsewhere.
        frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    except (*_DECODE_ERRORS, IndexError):
        return _decode_with_pyav(path, indices)
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        return _decode_with_pyav(path, indices)
    return frames


def _read_image(path: Path) -> np.ndarray:
    """(1, H, W, 3) uint8; its size checked before it is decoded (:func:`ca2vdm.io.bounded.decode_image`)."""
    try:
        return decode_image(path, f"image {path}")
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def read_video(
    path: str | os.PathLike, num_frames: int | None = None, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Read a video or image as a (3, T, H, W) float tensor in [-1, 1].

    Images (png, jpg, ...) give T = 1 and ignore `num_frames`. For videos,
    `num_frames` keeps the LAST frames (for continuing a video); a shorter
    video is returned whole. `size` ((height, width), or one side of a square)
    center-crops to its aspect ratio and resizes (:func:`resize_center_crop`).
    Raises ValueError naming the file if it is missing or unreadable.
    """
    path = Path(path)
    if num_frames is not None and num_frames <= 0:
        raise ValueError(f"num_frames must be positive or None, got {num_frames}")
    check_input_file(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        frames = _read_image(path)
    else:
        reader = open_video(path)
        total = len(reader)
        start = 0 if num_frames is None else max(0, total - num_frames)
        frames = read_frames(path, range(start, total), reader)
    return _uint8_to_float(frames) if size is None else resize_center_crop(frames, size)


def stream_video(path: str | os.PathLike, size: int | tuple[int, int],
                 batch_frames: int = 4) -> Iterator[torch.Tensor]:
    """Decode a video (or an image) in order, yielding (3, T <= batch_frames, height, width) float tensors in [-1, 1]
    (``size``: (height, width), or one side of a square).

    Each batch is resized and center-cropped (as :func:`resize_center_crop`) as soon as it is decoded, so memory
    does not grow with the video's length. Raises ValueError naming the file and the problem.
    """
    path = check_input_file(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); pass the full image or video file")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        yield resize_center_crop(_read_image(path), size)
        return
    batch: list[np.ndarray] = []
    count = 0
    for count, frame in enumerate(_decode_frames(path), 1):
        batch.append(frame)
        if len(batch) == batch_frames:
            yield resize_center_crop(np.stack(batch), size)
            batch = []
    if count == 0:
        raise ValueError(f"video {path} contains no frames")
    if batch:
        yield resize_center_crop(np.stack(batch), size)


def _decode_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video as (H, W, 3) uint8, decoded one at a time with PyAV; ValueError if fewer decode than
    the container declares (a file cut short)."""
    decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            check_frame_size(f"video {path}", stream.codec_context.width, stream.codec_context.height)
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                decoded += 1
            declared = stream.frames
    except (av.FFmpegError, IndexError) as error:
        raise ValueError(f"cannot read video {path}: {_av_problem(error)}") from error
    if decoded < declared:
        raise ValueError(f"video {path} is truncated or damaged: only {decoded} of its {declared} frames decode")
