"""What a failed write means, in words: a full disk is said plainly, whichever library was writing.

A full disk reaches us as ``OSError(ENOSPC)`` from Python's own writes, as safetensors' ``I/O error: No space left on
device (os error 28)``, and from ``torch.save`` as ``[enforce fail at inline_container.cc:672] . unexpected pos 576
vs 534``: torch's zip writer drops the errno (all three seen on a 1 MiB tmpfs with torch 2.13 and safetensors 0.8).
The last is read as a full disk when the folder's file system has next to no space left right after the failure (a
write that fills the disk leaves its partial file behind until the caller discards it).
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

LOW_SPACE = 16 * 2**20  # bytes: a torch write failure with less free than this is a full disk
_NO_SPACE_TEXT = ("No space left on device", f"os error {errno.ENOSPC}")
_QUOTA_TEXT = ("Disk quota exceeded", f"os error {errno.EDQUOT}")


def free_bytes(folder: str | Path) -> int | None:
    """Bytes free to this user on the file system holding ``folder`` (or its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _kind(e: BaseException, free: int | None) -> str | None:
    """'full', 'quota' or None (another kind of failure)."""
    code, text = getattr(e, "errno", None), str(e)
    if code == errno.EDQUOT or any(t in text for t in _QUOTA_TEXT):
        return "quota"
    if code == errno.ENOSPC or any(t in text for t in _NO_SPACE_TEXT):
        return "full"
    if "unexpected pos" in text and free is not None and free < LOW_SPACE:
        return "full"
    return None


def describe_write_error(e: BaseException, folder: str | Path, setting: str = "another folder") -> tuple[str, str]:
    """(what went wrong, what to do) for ``e``, raised while writing into ``folder``; ``setting`` names where else
    the user can write (e.g. ``another train.output_dir``). Call it before deleting what the failed write left."""
    free = free_bytes(folder)
    kind = _kind(e, free)
    if kind == "full":
        return (f"No space left on device in {folder} ({(free or 0) / 2**20:.1f} MiB free)",
                f"Free space on that disk or choose {setting}")
    if kind == "quota":
        return f"disk quota exceeded in {folder}", f"Free space in your quota or choose {setting}"
    return f"{type(e).__name__}: {e}", "Free disk space or fix permissions"


def is_disk_full(e: BaseException, folder: str | Path) -> bool:
    """Whether ``e``, raised while writing into ``folder``, means the disk or the user's quota is full."""
    return _kind(e, free_bytes(folder)) is not None
