"""Where generation writes, and the checks that keep an output from destroying anything.

An output never replaces the checkpoint (or a file in a checkpoint directory), the --first-frame input, a device or
pipe, or another output of the same run; an existing video or contact sheet is replaced only with ``overwrite``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .video_io import check_input_file

if TYPE_CHECKING:
    from .generate import GenerationOptions

VIDEO_NAME = "long_video.mp4"  # the file written into an output directory


def output_path(out: str | Path) -> Path:
    """The video file ``out`` names: a trailing slash or an existing directory means ``VIDEO_NAME`` inside it."""
    if str(out).endswith(("/", os.sep)) or Path(out).is_dir():
        return Path(out) / VIDEO_NAME
    return Path(out)


def preview_path(out: Path) -> Path:
    """The contact sheet written beside the video ``out``."""
    return out.with_suffix(".png")


def check_paths(checkpoint: str | Path, out: Path, opts: GenerationOptions) -> None:
    """Refuse, before any work, a --first-frame that is not a file and outputs that would destroy something: the
    checkpoint (or a file in a checkpoint directory), the input, a device or pipe, each other, or (without
    ``opts.overwrite``) an existing video or contact sheet."""
    if opts.first_frame:
        try:
            check_input_file(opts.first_frame)
        except ValueError as e:
            raise ValueError(f"--first-frame: {e}") from None
    outputs = {"--out": out, "the --preview sheet": preview_path(out) if opts.preview else None,
               "--stats": Path(opts.stats) if opts.stats else None}
    outputs = {what: path for what, path in outputs.items() if path is not None}
    for what, path in outputs.items():
        _check_output(what, path, Path(checkpoint), opts.first_frame)
    seen: dict[Path, str] = {}
    for what, path in outputs.items():
        other = seen.setdefault(path.resolve(), what)
        if other != what:
            hint = " (the --preview sheet is --out with the suffix .png)" if "preview" in what + other else ""
            raise ValueError(f"{what} {path} is the same file as {other}; give each its own path{hint}")
    for what in ("--out", "the --preview sheet"):
        if what in outputs and outputs[what].exists() and not opts.overwrite:
            raise ValueError(f"{what} {outputs[what]} already exists; pass --overwrite to replace it, or choose "
                             "another --out")


def _check_output(what: str, path: Path, checkpoint: Path, first_frame: str | None) -> None:
    """An output must be (or become) a regular file that is neither the checkpoint nor the input."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; choose a file path")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path} exists and is not a regular file (a device, pipe or socket); choose a "
                         "file path")
    if checkpoint.is_dir() and path.resolve().is_relative_to(checkpoint.resolve()):
        raise ValueError(f"{what} {path} is inside the checkpoint directory {checkpoint}; write it elsewhere")
    if _same_file(path, checkpoint):
        raise ValueError(f"{what} {path} is the checkpoint (--checkpoint); writing it would destroy the weights: "
                         "choose another path")
    if first_frame and _same_file(path, Path(first_frame)):
        raise ValueError(f"{what} {path} is the --first-frame input; choose another path")


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)

