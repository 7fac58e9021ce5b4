"""Files written atomically (a temporary name, then a rename) with the permissions of an ordinary file.

safetensors creates its files mode 0600 whatever the umask, so weights and latent shards came out private while
everything else a run writes (config.yaml, metrics.jsonl, videos) is 0644. It also writes the metadata in the order of
a Rust hash map, different in every process, so the same weights exported twice made two different files: the header
is rewritten with its metadata keys sorted (:func:`sort_metadata`). Every tensor file ca2vdm writes goes
through :func:`save_tensors_atomic` (text files through :func:`write_text_atomic`), and :func:`honour_umask` fixes
files written by other libraries (accelerate, diffusers). Torch loads only when tensors are saved, so a text file
is written without it.
"""
from __future__ import annotations

import json
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
    sort_metadata(tmp)
    honour_umask(tmp)
    os.replace(tmp, path)


def sort_metadata(path: str | os.PathLike) -> None:
    """Rewrite a safetensors file's header in place with its ``__metadata__`` keys sorted: the same tensors and
    metadata give the same bytes. The header is the one safetensors wrote, re-serialised compactly (never longer:
    serde_json escapes as ``json.dumps(ensure_ascii=False)`` does) and padded with spaces to its old length, so the
    tensor offsets are unchanged."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:
            raise RuntimeError(f"{path}: the re-serialised safetensors header grew ({len(text)} > {size} bytes)")
        f.seek(8)
        f.write(text.ljust(size))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file under a temporary name beside ``path``, then rename it into place (as
    :func:`save_tensors_atomic`, never onto anything but a regular file)."""
    path = check_writable_file(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
