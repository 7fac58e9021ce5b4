"""Decoded frames are bounded: an image's or a video's frame size is read from its header and checked before anything
is decoded, so a small file that decodes to gigabytes (a "decompression bomb": 410 KB of PNG for 12000x12000 pixels)
is refused instead of filling memory. A JPEG over the bound is decoded reduced instead (libjpeg scales by 1/2, 1/4 or
1/8 while decoding: every model here works far below the bound). Used by every reader of images and videos
(:mod:`ca2vdm.io.video`), so the command line's ``--first-frame``, the API's paths and the server's uploads alike.
"""
from __future__ import annotations

import os
import warnings
from typing import BinaryIO

import av
import numpy as np
from PIL import Image

MAX_SIDE = 4096
MAX_FRAME_PIXELS = MAX_SIDE * MAX_SIDE  # 16.8 million pixels (48 MiB as RGB) per decoded frame


class FrameTooLarge(ValueError):
    """An image or video whose frames would decode beyond :data:`MAX_FRAME_PIXELS`."""

    def __init__(self, name: str, width: int | None, height: int | None):
        self.name, self.width, self.height = name, width, height
        super().__init__(f"{name} {self.problem}")

    @property
    def problem(self) -> str:
        what = "has too many pixels for PIL to open" if self.width is None else \
            f"is {self.width}x{self.height} pixels ({self.width * self.height / 1e6:.1f} million per frame)"
        return (f"{what}, over the limit of {MAX_SIDE}x{MAX_SIDE} ({MAX_FRAME_PIXELS / 1e6:.1f} million pixels) that "
                "is decoded; scale it down first (frames are resized to the model's size anyway)")


def check_frame_size(name: str, width: int, height: int) -> None:
    """FrameTooLarge if a ``width`` x ``height`` frame is beyond the bound (or its size is not known)."""
    if width <= 0 or height <= 0 or width * height > MAX_FRAME_PIXELS:
        raise FrameTooLarge(name, width, height)


def decode_image(source: str | os.PathLike | BinaryIO, name: str) -> np.ndarray:
    """An image (a path or a file object) as (1, H, W, 3) uint8, its size checked from the header first; a JPEG
    over the bound is decoded reduced. FrameTooLarge beyond the bound; PIL's errors (``UnidentifiedImageError``,
    ``OSError``) for a file that is not a readable image."""
    try:
        with warnings.catch_warnings():  # PIL warns from 89 million pixels on; our bound is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)  # reads the header only
    except Image.DecompressionBombError:  # PIL's own refusal, from 179 million pixels on
        raise FrameTooLarge(name, None, None) from None
    with image:
        width, height = image.size
        if width * height > MAX_FRAME_PIXELS and image.format == "JPEG":
            scale = next((s for s in (2, 4, 8) if (width // s) * (height // s) <= MAX_FRAME_PIXELS), 8)
            image.draft("RGB", (width // scale, height // scale))
        check_frame_size(name, *image.size)
        return np.array(image.convert("RGB"))[None]


def check_video_frames(path: str | os.PathLike) -> None:
    """FrameTooLarge if the first video stream of ``path`` declares frames beyond the bound (the container's header
    only: nothing is decoded). A file PyAV cannot open is left to the decoder's own error."""
    try:
        with av.open(str(path)) as container:
            context = container.streams.video[0].codec_context
            width, height = context.width, context.height
    except (av.FFmpegError, IndexError):
        return
    check_frame_size(f"video {path}", width, height)
