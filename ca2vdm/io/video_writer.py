"""Writing videos and contact sheets: a streaming mp4 writer (atomic: a temporary file renamed when complete).

Frames are uint8 numpy arrays shaped (T, H, W, 3); :func:`ca2vdm.io.video.to_uint8` converts model-side videos.
Split from :mod:`ca2vdm.io.video`, which re-exports these names.

The same frames give the same file, bit for bit: videos are encoded without B-frames. With B-frames, libx264's
macroblock-tree rate control (``mbtree``, on by default) read memory it had never written on low-motion clips such
as ours, so equal frames gave files that depended on the process's heap (the first video of a process differed
from the next ones, and runs differed; glibc's ``MALLOC_PERTURB_`` makes it repeatable: a fixed value, a fixed
file; another value, another file). Without B-frames the encode reads only what it wrote, whatever the heap holds.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from PIL import Image

from ca2vdm.io.paths import check_writable_file

KEYFRAME_INTERVAL = 16  # frames between keyframes in written videos
B_FRAMES = 0  # none: libx264's rate control made files that depend on uninitialised memory with them (see above)


def save_contact_sheet(
    frames: np.ndarray, path: str | os.PathLike, frames_per_row: int, gap: int = 2
) -> None:
    """Save (N, H, W, 3) uint8 frames as a PNG grid with `gap` px white gaps.

    Rows hold `frames_per_row` frames (fewer columns if N is smaller); the last
    row is padded with black frames.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if frames_per_row <= 0:
        raise ValueError(f"frames_per_row must be positive, got {frames_per_row}")
    count, height, width, _ = frames.shape
    cols = min(frames_per_row, count)
    rows = -(-count // cols)
    sheet = np.full(
        (rows * height + (rows - 1) * gap, cols * width + (cols - 1) * gap, 3), 255, np.uint8
    )
    padded = np.zeros((rows * cols, height, width, 3), np.uint8)
    padded[:count] = frames
    for index, frame in enumerate(padded):
        row, col = divmod(index, cols)
        y, x = row * (height + gap), col * (width + gap)
        sheet[y : y + height, x : x + width] = frame
    path = check_writable_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, format="PNG")


def _prepare_output_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(
            f"cannot create output directory {directory}: {error}; choose a writable location"
        ) from error
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(
            f"output directory {directory} is not writable; fix its permissions or choose another path"
        )


class VideoWriter:
    """Stream (T, H, W, 3) uint8 frames into an mp4 file, encoding as they arrive.

    Writes an mp4 container whatever the suffix of `path`. Encodes H.264
    (libx264, yuv420p, constant quality `crf`) or, when libx264 is
    unavailable, MPEG-4 part 2 at high quality. Frame size is taken from the
    first `write`. yuv420p needs even sizes, so odd heights/widths are padded by
    one replicated edge row/column (the file is then one pixel larger).

    Output goes to a hidden temporary file next to `path` (`.<name>.partial.mp4`)
    that is renamed onto `path` by `close()`; if the `with` block raises, the
    temporary file is deleted and `path` is left untouched. An existing `path`
    is replaced only with `overwrite`, and only if it is a regular file (never a
    directory, device, pipe or socket): SettingError before anything is written.

        with VideoWriter("out.mp4", fps=8) as writer:
            writer.write(frames)  # (T, H, W, 3) uint8
    """

    def __init__(self, path: str | os.PathLike, fps: int, crf: int = 10, *, overwrite: bool = False) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = check_writable_file(path, overwrite=overwrite)
        self.fps = int(fps)
        self.crf = crf
        _prepare_output_dir(self.path.parent)
        self._tmp_path = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self._container = av.open(str(self._tmp_path), mode="w", format="mp4")
        self._stream: av.VideoStream | None = None
        self._frame_shape: tuple[int, int] | None = None
        self._frames_written = 0
        self._closed = False

    @property
    def frames_written(self) -> int:
        """Number of frames passed to `write` so far."""
        return self._frames_written

    def _open_stream(self, height: int, width: int) -> av.VideoStream:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = self._container.add_stream(codec, rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, self.fps)
        stream.codec_context.gop_size = KEYFRAME_INTERVAL  # readers seek to any clip cheaply
        stream.codec_context.max_b_frames = B_FRAMES  # the same frames, the same file (module docstring)
        if codec == "libx264":
            stream.options = {"crf": str(self.crf)}
        else:
            stream.options = {"qscale": "2"}
        return stream

    def write(self, frames: np.ndarray) -> None:
        """Encode (T, H, W, 3) uint8 frames and append them to the file."""
        if self._closed:
            raise ValueError(f"VideoWriter for {self.path} is already closed")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"VideoWriter.write expects (T, H, W, 3) uint8 frames, got {frames.shape} "
                f"{frames.dtype}; use video_io.to_uint8 for (C, T, H, W) float tensors"
            )
        height, width = frames.shape[1:3]
        if self._frame_shape is None:
            self._frame_shape = (height, width)
            self._stream = self._open_stream(height, width)
        elif self._frame_shape != (height, width):
            raise ValueError(
                f"frame size changed from {self._frame_shape} to {(height, width)} in {self.path}; "
                "all frames of a video must have the same size"
            )
        pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
        frames = np.pad(frames, pad, mode="edge") if height % 2 or width % 2 else frames
        for frame in frames:  # (H, W, 3)
            av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            av_frame.pts = self._frames_written
            self._container.mux(self._stream.encode(av_frame))
            self._frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file onto `path`.

        Raises ValueError (leaving no file) if no frames were written.
        """
        if self._closed:
            return
        if self._stream is None:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; nothing saved")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        os.replace(self._tmp_path, self.path)

    def abort(self) -> None:
        """Stop writing and delete the temporary file; nothing is left at `path`."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except av.FFmpegError:
            pass  # the partial file is deleted below either way
        self._tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
