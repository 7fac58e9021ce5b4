"""Files written atomically (a temporary name, then a rename) with the permissions of an ordinary file.

safetensors creates its files mode 0600 whatever the umask, so weights and latent shards came out private while
everything else a run writes (config.yaml, metrics.jsonl, videos) is 0644. Every tensor file ca2vdm writes goes
through :func:`save_tensors_atomic` (text files through :func:`write_text_atomic`), and :func:`honour_umask` fixes
files written by other libraries (accelerate, diffusers). Torch loads only when tensors are saved, so a text file
is written without it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ca2vdm.io.paths import check_writable_file

if TYPE_CHECKING:
    import torch


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0644 under the usual 022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def honour_umask(path: str | os.PathLike) -> None:
    """Give a file the mode an ordinary new file would get (see :func:`file_mode`)."""
    os.chmod(path, file_mode())


def save_tensors_atomic(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """safetensors ``save_file`` to a temporary name beside ``path``, mode set from the umask, then renamed (never
    onto a directory, device, pipe or socket: :func:`~ca2vdm.io.paths.check_writable_file`)."""
    from safetensors.torch import save_file  # here: writing text needs no torch

    path = check_writable_file(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    honour_umask(tmp)
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file under a temporary name beside ``path``, then rename it into place (as
    :func:`save_tensors_atomic`, never onto anything but a regular file)."""
    path = check_writable_file(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
