"""Paths the project reads and writes: the defaults of generation, and the checks that an input is a file and that an
output destroys nothing. Torch-free (the command lines use it before torch loads).

No file the project writes replaces a directory, a device, a pipe or a socket (:func:`check_writable_file`, the one
check every writer calls). An output never replaces the checkpoint (or a file in a checkpoint directory), the given
first-frame input, or another output of the same run; an existing video or contact sheet is replaced only with
``overwrite``.
Each refusal is a :class:`~ca2vdm.errors.SettingError` naming the setting (``out``, ``stats``, ``first_frame``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ca2vdm.errors import SettingError, opt

VIDEO_NAME = "long_video.mp4"  # the file written into an output directory
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "demo.safetensors"  # the shipped model
DEFAULT_OUT = Path("outputs") / VIDEO_NAME  # the command line's scratch output, replaced by every run


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """``RUN/checkpoints/latest`` (where no such file or folder exists) -> the newest ``step_N`` folder beside it (a
    training run publishes each one complete, by a rename); any other path as it is."""
    path = Path(path)
    if path.name != "latest" or path.exists():
        return path
    steps = [p for p in path.parent.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return max(steps, key=lambda p: int(p.name[5:])) if steps else path


def check_input_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is an existing regular file; otherwise ValueError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image or video file")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file (a device, pipe or socket); pass an image or video file")
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


def check_writable_file(path: str | os.PathLike, name: str = "path", overwrite: bool = True) -> Path:
    """``path`` as a Path if writing a file there destroys nothing: it is new, or an existing regular file (only with
    ``overwrite``). A directory, a device (``/dev/null``), a pipe or a socket (or a link to one) is refused, with or
    without ``overwrite``: every file the project writes goes through this check (videos, contact sheets, weights,
    latent shards, text files). SettingError naming ``name`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise SettingError(name, path, "is a directory; give the path of a file to write")
    if path.exists() and not path.is_file():
        raise SettingError(name, path, "exists and is not a regular file (a device, pipe or socket): writing would "
                           "replace it; choose a file path")
    if path.exists() and not overwrite:
        raise SettingError(name, path, f"already exists; pass {opt('overwrite')} to replace it, or choose another "
                           "path")
    return path


def check_output_folder(path: str | os.PathLike, name: str = "out") -> Path:
    """``path`` as a Path if a tool may write its files into it: a new folder, or an existing one. A regular file, a
    device, a pipe or a socket (or a link to one) is refused: SettingError naming ``name``. Whether the folder may
    already hold files is the tool's rule (a dataset, shards and trajectories need a new or empty one)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        what = "a file" if path.is_file() else "a device, pipe or socket"
        raise SettingError(name, path, f"is {what}, not a folder: give a folder (new or existing) to write into")
    return path


def check_not_an_input(name: str, path: str | os.PathLike, inputs: list[str | os.PathLike],
                       what: str = "the input") -> None:
    """Refuse (SettingError naming ``name``) an output that is one of ``inputs`` (described as ``what``) or lies inside
    an input folder: writing it would destroy what was read."""
    path = Path(path)
    for source in map(Path, inputs):
        if _same_file(path, source):
            raise SettingError(name, path, f"is {what} {source}; writing it would destroy what is read: choose "
                               "another path")
        if source.is_dir() and path.resolve().is_relative_to(source.resolve()):
            raise SettingError(name, path, f"is inside {what} {source}; write it elsewhere")


def output_path(out: str | Path) -> Path:
    """The video file ``out`` names: a trailing slash or an existing directory means ``VIDEO_NAME`` inside it."""
    if str(out).endswith(("/", os.sep)) or Path(out).is_dir():
        return Path(out) / VIDEO_NAME
    return Path(out)


def preview_path(out: Path) -> Path:
    """The contact sheet written beside the video ``out``."""
    return out.with_suffix(".png")


def check_paths(checkpoint: str | Path | None, out: Path, *, first_frame: str | None = None, preview: bool = False,
                stats: str | None = None, overwrite: bool = False, adapters: list[str | Path] = (),
                base: str | Path | None = None) -> None:
    """Refuse, before any work, a first frame that is not a file and outputs that would destroy something: the
    checkpoint, a Wan ``base`` folder or an adapter (or a file in their directories), the input, a device or pipe,
    each other, or (without ``overwrite``) an existing video or contact sheet."""
    if first_frame:
        try:
            check_input_file(first_frame)
        except ValueError as e:
            raise SettingError("first_frame", first_frame, str(e)) from None
    checkpoint = latest_checkpoint(checkpoint if checkpoint is not None else base)
    outputs = {"out": out, "preview": preview_path(out) if preview else None, "stats": Path(stats) if stats else None}
    outputs = {name: path for name, path in outputs.items() if path is not None}
    for name, path in outputs.items():
        if base is not None and path.resolve().is_relative_to(Path(base).resolve()):
            raise SettingError(name, path, f"is inside the {opt('base')} folder {base}; write it elsewhere")
        _check_output(name, path, Path(checkpoint), first_frame)
        for adapter in map(Path, adapters):
            if _same_file(path, adapter) or (adapter.is_dir() and path.resolve().is_relative_to(adapter.resolve())):
                raise SettingError(name, path, f"is (or is inside) the {opt('lora')} adapter {adapter}; write it "
                                   "elsewhere")
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        other = seen.setdefault(path.resolve(), name)
        if other != name:
            hint = f" (the contact sheet is {opt('out')} with the suffix .png)" if "preview" in (name, other) else ""
            raise SettingError(name, path, f"is the same file as {opt(other)}; give each its own path{hint}")
    for name in ("out", "preview"):
        if name in outputs and outputs[name].exists() and not overwrite:
            raise SettingError(name, outputs[name], f"already exists; pass {opt('overwrite')} to replace it, or "
                               f"choose another {opt('out')}")


def _check_output(name: str, path: Path, checkpoint: Path, first_frame: str | None) -> None:
    """An output must be (or become) a regular file that is neither the checkpoint nor the input."""
    check_writable_file(path, name)
    if checkpoint.is_dir() and path.resolve().is_relative_to(checkpoint.resolve()):
        raise SettingError(name, path, f"is inside the checkpoint directory {checkpoint}; write it elsewhere")
    if _same_file(path, checkpoint):
        raise SettingError(name, path, f"is the checkpoint ({opt('checkpoint')}); writing it would destroy the "
                           "weights: choose another path")
    if first_frame and _same_file(path, Path(first_frame)):
        raise SettingError(name, path, f"is the {opt('first_frame')} input; choose another path")


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)
