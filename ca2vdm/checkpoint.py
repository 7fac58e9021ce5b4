"""Checkpoint files: model weights with their config in safetensors, atomic directories, ``latest`` lookup.

A training checkpoint is a directory ``<output_dir>/checkpoints/step_<N>/`` holding accelerate's full training state
(raw weights in its ``model.safetensors``, optimizer, scheduler, RNG, EMA, step) plus ``ema.safetensors``, the EMA
weights that inference uses. Every weights file
records the model config (and optional calibration data such as TeaCache coefficients) in its metadata, so a
single path is all inference needs. Directories are written under a temporary name (``.tmp-step_<N>``), flushed to
disk and renamed when complete, so ``latest`` never picks a half-written one; old checkpoints are renamed out of the
way (``.trash-step_<N>``) before they are deleted, so a kill during pruning never leaves a half-deleted ``step_<N>``.
Every failure to read a checkpoint raises :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ConfigError, ModelConfig, to_dict, validate_model
from .model import CausalVideoDiT

WEIGHTS_NAME = "ema.safetensors"
TRAINING_WEIGHTS_NAME = "model.safetensors"  # accelerate's raw (non-EMA) weights in a training checkpoint
_STEP_DIR = re.compile(r"^step_(\d+)$")
_RUNTIME_FIELDS = {"attention_backend"}  # model config fields that may differ between a checkpoint and its use
logger = logging.getLogger("ca2vdm.checkpoint")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class CheckpointWriteError(RuntimeError):
    """Writing a training checkpoint failed (disk full, permissions, ...); earlier checkpoints are untouched."""


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], model_cfg: ModelConfig,
                 extra: dict | None = None) -> None:
    """Write weights + config metadata atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"model_config": json.dumps(to_dict(model_cfg))}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
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
    if not isinstance(metadata, dict) or "model_config" not in metadata:
        raise CheckpointError(f"checkpoint {path} is corrupt or was not written by ca2vdm (no model_config in its "
                              "metadata); pass a file saved by ca2vdm training or scripts/export_checkpoint.py")
    return {k: _decode(v) for k, v in metadata.items()}


def model_config_of(path: str | Path) -> ModelConfig:
    """The validated model config recorded in a weights file (or a checkpoint directory's EMA weights)."""
    path = weights_file(path)
    recorded = read_metadata(path)["model_config"]
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
        found = f"only incomplete checkpoints ({', '.join(p.name for p in dirs)})" if dirs else "no checkpoint"
        raise CheckpointError(f"--resume latest: {found} under {root}; train first, or pass a checkpoint directory")
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointError(f"--resume {spec}: not a checkpoint directory; pass 'latest' or "
                              "<train.output_dir>/checkpoints/step_N")
    missing = missing_files(path)
    if missing:
        raise CheckpointError(f"--resume {spec}: checkpoint {path} is incomplete (missing {', '.join(missing)}); "
                              "pass another checkpoint directory or 'latest'")
    return path


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
