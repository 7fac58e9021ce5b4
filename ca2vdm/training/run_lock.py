"""One training run per output directory: a lock file that the kernel releases however its owner ends."""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from ca2vdm.errors import CheckpointWriteError, ConfigError, RunLockedError

LOCK_NAME = "train.lock"
PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)  # what "fix the permissions" can fix
logger = logging.getLogger("ca2vdm.checkpoint")


class RunLock:
    """Exclusive lock on a training output directory, held for the whole run (a context manager).

    ``<output_dir>/train.lock`` names its owner (pid and host) and is ``flock``-ed by it, so the kernel drops the lock
    however the owner ends, SIGKILL included. A lock file that nobody holds was left by a killed run: it is stale and
    taken over with a warning. One naming another host is refused, since its owner cannot be checked from here.
    :meth:`release` deletes the file, and the output directory too if the lock created it and it is still empty.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self) -> None:
        """Take the lock; raise :class:`RunLockedError` naming the owner if another run holds it."""
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"train.output_dir={folder} is a file, not a folder; choose a folder for the run (a new "
                              "one, or the folder of the run to resume)")
        made_dir = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _flock(self.path)
        except OSError as e:
            fix = "fix the permissions of train.output_dir or choose another" if e.errno in PERMISSION else \
                "a part of its path is a file, not a folder: choose another train.output_dir" if e.errno in (
                    errno.ENOTDIR, errno.EEXIST) else "choose another train.output_dir"
            raise CheckpointWriteError(f"cannot create {self.path}: {e.strerror or e}; {fix}") from e
        owner = _owner(self.path)
        here = socket.gethostname()
        if fd is None or owner.get("host", here) != here:
            if fd is not None:
                os.close(fd)
            ended = f"; if that run has ended, delete {self.path}" if fd is not None else ""
            raise RunLockedError(f"train.output_dir {folder} is in use by another training run (pid "
                                 f"{owner.get('pid', '?')} on {owner.get('host', here)}, lock file {self.path}); wait "
                                 f"for it to end or choose another train.output_dir{ended}")
        if owner:
            logger.warning("%s: taking over the stale lock of pid %s (no longer running)", self.path,
                           owner.get("pid"))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": here}).encode())
        self._fd, self._made_dir = fd, made_dir

    def release(self) -> None:
        """Delete the lock file and let go of the lock (a no-op if not held)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it: a waiting run then locks a new file
        os.close(self._fd)
        self._fd = None
        if self._made_dir:
            try:
                self.path.parent.rmdir()  # a run refused before any work leaves no trace
            except OSError:
                pass  # not empty: the run wrote its files

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _flock(path: Path) -> int | None:
    """A descriptor holding an exclusive ``flock`` on the file now at ``path`` (created if missing); None if another
    process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder deleted the file while we locked it: lock the new one


def _owner(path: Path) -> dict:
    """The pid and host recorded in a lock file ({} if empty or unreadable)."""
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}
