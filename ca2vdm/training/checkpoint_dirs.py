"""A training run's checkpoint directories: ``step_<N>`` folders published atomically, ``latest`` lookup, pruning,
and what a resumed run may not change.

A training checkpoint is a directory ``<output_dir>/checkpoints/step_<N>/`` holding accelerate's full training state
(raw weights in its ``model.safetensors``, optimizer, scheduler, RNG, EMA, step) plus ``ema.safetensors``, the EMA
weights that inference uses (:mod:`ca2vdm.checkpoints.weights`); a LoRA run's holds its adapter alone in both,
``adapter.safetensors`` in place of ``ema.safetensors`` (:mod:`ca2vdm.training.lora`). Directories are written under
a temporary name (``.tmp-step_<N>``), flushed to disk and renamed when complete, so ``latest`` never picks a
half-written one; old checkpoints are renamed out of the way (``.trash-step_<N>``) before they are deleted, so a kill
during pruning never leaves a half-deleted ``step_<N>``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from ca2vdm.checkpoints.adapters import ADAPTER_NAME
from ca2vdm.checkpoints.weights import TRAINING_WEIGHTS_NAME, WEIGHTS_NAME, model_config_of, read_metadata, weights_file
from ca2vdm.config import ModelConfig, TrainConfig, to_dict
from ca2vdm.errors import CheckpointError, opt
from ca2vdm.io.atomic import honour_umask

_STEP_DIR = re.compile(r"^step_(\d+)$")
_RUNTIME_FIELDS = {"attention_backend"}  # model config fields that may differ between a checkpoint and its use
# train config fields a resumed run cannot change: the optimizer, schedule and EMA state restored from a checkpoint
# were built from them (a new value would be ignored), and the data order and per-step noise follow from them; a
# sharded run's optimizer.bin holds the full state keyed by parameter name (ca2vdm.training.sharded_state).
FIXED_ON_RESUME = ("seed", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_steps", "ema_decay", "init_from",
                   "fsdp", "lora")
logger = logging.getLogger("ca2vdm.checkpoint")


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
    path = published_file(path)
    recorded = read_metadata(path).get("train_config")  # any trainer's checkpoint records it
    if not isinstance(recorded, dict):
        return
    current = to_dict(train_cfg)
    diff = [f"train.{k}={current[k]!r} (checkpoint: {recorded[k]!r})" for k in FIXED_ON_RESUME
            if k in recorded and recorded[k] != current[k]]
    if diff:
        raise CheckpointError(f"cannot resume {path.parent} with {', '.join(diff)}: its optimizer, schedule and data "
                              f"order depend on them; rerun {opt('resume')} with the checkpoint's values "
                              "(train.max_steps may change), or fine-tune in a new train.output_dir with "
                              f"train.init_from={path.parent}")


def published_file(path: str | Path) -> Path:
    """The weights a checkpoint publishes: its ``ema.safetensors``, or a LoRA run's ``adapter.safetensors``."""
    path = Path(path)
    if path.is_dir() and not (path / WEIGHTS_NAME).is_file() and (path / ADAPTER_NAME).is_file():
        return path / ADAPTER_NAME
    return weights_file(path)


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
    missing = [name for name in ("optimizer.bin", "scheduler.bin") if not (path / name).is_file()]
    if not (path / WEIGHTS_NAME).is_file() and not (path / ADAPTER_NAME).is_file():  # a LoRA run publishes its adapter
        missing.insert(0, WEIGHTS_NAME)
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
            logger.warning("the latest checkpoint: skipping incomplete checkpoint %s (missing %s)", path,
                           ", ".join(missing))
        raise CheckpointError(_nothing_to_resume(Path(root), dirs))
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointError(f"{opt('resume', spec)}: not a checkpoint directory; pass 'latest' or "
                              "<train.output_dir>/checkpoints/step_N")
    missing = missing_files(path)
    if missing:
        raise CheckpointError(f"{opt('resume', spec)}: checkpoint {path} is incomplete (missing {', '.join(missing)}); "
                              "pass another checkpoint directory or 'latest'")
    return path


def _nothing_to_resume(root: Path, dirs: list[Path]) -> str:
    """Why resuming from the latest checkpoint finds nothing under ``root``, and what to do instead."""
    latest, resume = opt("resume", "latest"), opt("resume")
    if dirs:
        return (f"{latest}: only incomplete checkpoints ({', '.join(p.name for p in dirs)}) under {root}; move them "
                f"away and start fresh (rerun without {resume}), or pass a complete checkpoint directory")
    partial = sorted(p.name for p in root.glob(".tmp-step_*"))
    if partial:
        return (f"{latest}: no complete checkpoint under {root}: the run was stopped while writing its first one "
                f"({', '.join(partial)}), so there is nothing to resume; start fresh: rerun without {resume}")
    return f"{latest}: no checkpoint under {root}; train first (rerun without {resume}), or pass a checkpoint directory"


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
    for f in staging.rglob("*"):
        if f.is_file():
            honour_umask(f)  # safetensors files (accelerate's, diffusers') are created 0600
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
