"""Checkpoint files: model weights with their config in safetensors, atomic directories, ``latest`` lookup.

A training checkpoint is a directory ``<output_dir>/checkpoints/step_<N>/`` holding accelerate's full training state
(raw weights in its ``model.safetensors``, optimizer, scheduler, RNG, EMA, step) plus ``ema.safetensors``, the EMA
weights that inference uses. Every weights file
records the model config (and optional calibration data such as TeaCache coefficients) in its metadata, so a
single path is all inference needs. Directories are written under a temporary name (``.tmp-step_<N>``), flushed to
disk and renamed when complete, so ``latest`` never picks a half-written one; old checkpoints are renamed out of the
way (``.trash-step_<N>``) before they are deleted, so a kill during pruning never leaves a half-deleted ``step_<N>``.
Every failure to read a checkpoint raises :class:`CheckpointError` naming the file. A training run holds
:class:`RunLock` on its output directory, so two runs never write into one.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ConfigError, ModelConfig, TrainConfig, to_dict, validate_model
from .model import CausalVideoDiT

WEIGHTS_NAME = "ema.safetensors"
TRAINING_WEIGHTS_NAME = "model.safetensors"  # accelerate's raw (non-EMA) weights in a training checkpoint
_STEP_DIR = re.compile(r"^step_(\d+)$")
_RUNTIME_FIELDS = {"attention_backend"}  # model config fields that may differ between a checkpoint and its use
# train config fields a resumed run cannot change: the optimizer, schedule and EMA state restored from a checkpoint
# were built from them (a new value would be ignored), and the data order and per-step noise follow from them; a
# sharded run's optimizer.bin holds the full state keyed by parameter name (ca2vdm.sharded_state).
FIXED_ON_RESUME = ("seed", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_steps", "ema_decay", "init_from",
                   "fsdp")
LOCK_NAME = "train.lock"
logger = logging.getLogger("ca2vdm.checkpoint")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class CheckpointWriteError(RuntimeError):
    """Writing a training checkpoint failed (disk full, permissions, ...); earlier checkpoints are untouched."""


class RunLockedError(RuntimeError):
    """Another training run is using the output directory."""


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], model_cfg: ModelConfig,
                 extra: dict | None = None) -> None:
    """Write a video model's weights + config metadata atomically."""
    save_tensors(path, state_dict, {"model_config": to_dict(model_cfg), **(extra or {})})


def save_tensors(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tensors + JSON-encoded metadata atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {k: json.dumps(v) for k, v in metadata.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def weights_file(path: str | Path) -> Path:
    """Resolve a checkpoint directory or a .safetensors file to the weights file inference loads."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass --checkpoint with a .safetensors file or a "
                              "training checkpoint directory (runs/<name>/checkpoints/step_N)")
    return path


def _decode(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value  # metadata written by another tool (e.g. {"format": "pt"}): keep the plain string


def read_metadata(path: str | Path) -> dict:
    """Decoded metadata of a weights file (model_config and any extras)."""
    path = weights_file(path)
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len)) if 0 < header_len < 100_000_000 else None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not {"model_config", "autoencoder_config"} & metadata.keys():
        raise CheckpointError(f"checkpoint {path} is corrupt or was not written by ca2vdm (no model_config in its "
                              "metadata); pass a file saved by ca2vdm training or scripts/export_checkpoint.py")
    return {k: _decode(v) for k, v in metadata.items()}


def model_config_of(path: str | Path) -> ModelConfig:
    """The validated model config recorded in a weights file (or a checkpoint directory's EMA weights)."""
    path = weights_file(path)
    metadata = read_metadata(path)
    if "model_config" not in metadata:
        raise CheckpointError(f"checkpoint {path} holds an autoencoder (train/train_autoencoder.py), not a video "
                              "model; use its autoencoder/ folder as codec.path with codec.kind=autoencoder")
    recorded = metadata["model_config"]
    if not isinstance(recorded, dict):
        raise CheckpointError(f"checkpoint {path} has a corrupt model_config in its metadata: {recorded!r}")
    try:
        return validate_model(ModelConfig(**recorded))
    except TypeError as e:
        raise CheckpointError(f"checkpoint {path} records a model config this version cannot read: {e}") from None
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path} records an invalid model config: {e}") from None


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[CausalVideoDiT, dict]:
    """Build the model a checkpoint describes and load its weights; returns (model, metadata).

    Raises :class:`CheckpointError` naming the file when it is missing, not a safetensors file, lacks ca2vdm
    metadata, is truncated, or holds weights that do not fit its recorded model config.
    """
    path = weights_file(path)
    metadata = read_metadata(path)
    cfg = model_config_of(path)
    model = CausalVideoDiT(cfg)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt (truncated or damaged): {e}") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes that do not fit the recorded config
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {path} does not match its recorded model config ({first[-1].strip()}); "
                              "it was written by another model definition or its metadata was edited") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not match its recorded model config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}); it was written by another "
                              "model definition")
    return model.to(device).eval(), metadata


def check_compatible(path: str | Path, model_cfg: ModelConfig) -> None:
    """Raise CheckpointError if the checkpoint at ``path`` was trained with a different model config."""
    path = weights_file(path)
    recorded, current = to_dict(model_config_of(path)), to_dict(model_cfg)
    diff = [f"model.{k}={current[k]!r} (checkpoint: {recorded[k]!r})" for k in current
            if k not in _RUNTIME_FIELDS and recorded.get(k) != current[k]]
    if diff:
        raise CheckpointError(f"checkpoint {path} was trained with another model config: {', '.join(diff)}; "
                              "use the config it was trained with, or start a new train.output_dir")


def check_resumable(path: str | Path, train_cfg: TrainConfig) -> None:
    """Raise CheckpointError if ``train_cfg`` changes a field of :data:`FIXED_ON_RESUME` from the value the checkpoint
    at ``path`` was trained with (checkpoints written before this record existed are not checked)."""
    path = weights_file(path)
    recorded = read_metadata(path).get("train_config")
    if not isinstance(recorded, dict):
        return
    diff = [f"train.{k}={getattr(train_cfg, k)!r} (checkpoint: {recorded[k]!r})" for k in FIXED_ON_RESUME
            if k in recorded and recorded[k] != getattr(train_cfg, k)]
    if diff:
        raise CheckpointError(f"cannot resume {path.parent} with {', '.join(diff)}: its optimizer, schedule and data "
                              "order depend on them; rerun --resume with the checkpoint's values (train.max_steps may "
                              f"change), or fine-tune in a new train.output_dir with train.init_from={path.parent}")


def step_dirs(root: str | Path) -> list[Path]:
    """Published checkpoint directories (``step_<N>``) under ``root``, oldest first; temporary ones are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def missing_files(path: str | Path) -> list[str]:
    """Files a resumable training checkpoint directory lacks (empty when it is complete)."""
    path = Path(path)
    needed = [WEIGHTS_NAME, "optimizer.bin", "scheduler.bin"]
    missing = [name for name in needed if not (path / name).is_file()]
    if not (path / TRAINING_WEIGHTS_NAME).is_file() and not (path / "pytorch_model.bin").is_file():
        missing.append(TRAINING_WEIGHTS_NAME)
    return missing


def resolve_resume(spec: str, root: str | Path) -> Path:
    """``latest`` -> newest complete checkpoint under ``root``; otherwise an explicit directory.

    Temporary (``.tmp-*``) directories are never considered; a ``step_<N>`` directory with files missing (copied
    by hand, damaged) is passed over with a warning.
    """
    if spec == "latest":
        dirs = step_dirs(root)
        for path in reversed(dirs):
            missing = missing_files(path)
            if not missing:
                return path
            logger.warning("--resume latest: skipping incomplete checkpoint %s (missing %s)", path, ", ".join(missing))
        raise CheckpointError(_nothing_to_resume(Path(root), dirs))
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointError(f"--resume {spec}: not a checkpoint directory; pass 'latest' or "
                              "<train.output_dir>/checkpoints/step_N")
    missing = missing_files(path)
    if missing:
        raise CheckpointError(f"--resume {spec}: checkpoint {path} is incomplete (missing {', '.join(missing)}); "
                              "pass another checkpoint directory or 'latest'")
    return path


def _nothing_to_resume(root: Path, dirs: list[Path]) -> str:
    """Why ``--resume latest`` finds nothing under ``root``, and what to do instead."""
    if dirs:
        return (f"--resume latest: only incomplete checkpoints ({', '.join(p.name for p in dirs)}) under {root}; "
                "move them away and start fresh (rerun without --resume), or pass a complete checkpoint directory")
    partial = sorted(p.name for p in root.glob(".tmp-step_*"))
    if partial:
        return (f"--resume latest: no complete checkpoint under {root}: the run was stopped while writing its first "
                f"one ({', '.join(partial)}), so there is nothing to resume; start fresh: rerun without --resume")
    return f"--resume latest: no checkpoint under {root}; train first (rerun without --resume), or pass a checkpoint " \
        "directory"


def staging_dir(final: str | Path) -> Path:
    """Where a checkpoint directory is assembled before :func:`publish` renames it into place."""
    final = Path(final)
    return final.with_name(f".tmp-{final.name}")


def discard(path: str | Path) -> None:
    """Delete a directory: first renamed to a hidden ``.trash-`` name (atomic), so no kill leaves it half-deleted
    under its real name."""
    path = Path(path)
    if not path.exists():
        return
    target = path
    if not path.name.startswith((".tmp-", ".trash-")):
        target = path.with_name(f".trash-{path.name}")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(path, target)
    shutil.rmtree(target, ignore_errors=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync directories
    finally:
        os.close(fd)


def publish(staging: str | Path, final: str | Path) -> None:
    """Flush a completely written checkpoint directory to disk and atomically move it to its final name."""
    staging, final = Path(staging), Path(final)
    for f in staging.iterdir():
        if f.is_file():
            _fsync(f)
    _fsync(staging)
    if final.exists():
        discard(final)  # e.g. a run resumed from an earlier checkpoint re-saving this step
    os.replace(staging, final)
    _fsync(final.parent)


def prune(root: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and stale temporary directories left by killed runs."""
    root = Path(root)
    for stale in [*root.glob(".tmp-step_*"), *root.glob(".trash-step_*")]:
        discard(stale)
    for old in step_dirs(root)[:-keep_last]:
        discard(old)


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
        made_dir = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _flock(self.path)
        except OSError as e:
            raise CheckpointWriteError(f"cannot create {self.path}: {e.strerror or e}; fix the permissions of "
                                       "train.output_dir or choose another") from e
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


def export_weights(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
                   extra: dict | None = None) -> Path:
    """Copy a checkpoint's inference weights to one small file (``dtype``), keeping and extending its metadata."""
    src = weights_file(src)
    metadata = read_metadata(src)
    model_cfg = model_config_of(src)
    metadata.pop("model_config")
    try:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {src} is corrupt (truncated or damaged): {e}") from None
    save_weights(dst, state, model_cfg, {**metadata, **(extra or {})})
    return Path(dst)


def update_metadata(path: str | Path, extra: dict) -> Path:
    """Add entries (e.g. TeaCache coefficients) to a weights file's metadata, rewriting it atomically."""
    path = weights_file(path)
    metadata = read_metadata(path)
    metadata.pop("model_config")
    save_weights(path, load_file(str(path)), model_config_of(path), {**metadata, **extra})
    return path
