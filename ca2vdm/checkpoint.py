"""Checkpoint files: model weights with their config in safetensors, atomic directories, ``latest`` lookup.

A training checkpoint is a directory ``<output_dir>/checkpoints/step_<N>/`` holding accelerate's full training state
(raw weights in its ``model.safetensors``, optimizer, scheduler, RNG, EMA, step) plus ``ema.safetensors``, the EMA
weights that inference uses. Every weights file
records the model config (and optional calibration data such as TeaCache coefficients) in its metadata, so a
single path is all inference needs. Directories are written under a temporary name and renamed when complete, so
``latest`` never picks a half-written one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, to_dict, validate_model
from .model import CausalVideoDiT

WEIGHTS_NAME = "ema.safetensors"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


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


def read_metadata(path: str | Path) -> dict:
    """Decoded metadata of a weights file (model_config and any extras)."""
    path = weights_file(path)
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len)) if 0 < header_len < 100_000_000 else None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
    if header is None or "model_config" not in header.get("__metadata__", {}):
        raise CheckpointError(f"checkpoint {path} is corrupt or was not written by ca2vdm (no model_config in its "
                              "metadata)")
    return {k: json.loads(v) for k, v in header["__metadata__"].items()}


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[CausalVideoDiT, dict]:
    """Build the model a checkpoint describes and load its weights; returns (model, metadata)."""
    path = weights_file(path)
    metadata = read_metadata(path)
    try:
        cfg = validate_model(ModelConfig(**metadata["model_config"]))
    except TypeError as e:
        raise CheckpointError(f"checkpoint {path} records a model config this version cannot read: {e}") from None
    model = CausalVideoDiT(cfg)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    mismatch = missing or unexpected
    if mismatch:
        raise CheckpointError(f"checkpoint {path} does not match its recorded model config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}); it was written by another "
                              "model definition")
    return model.to(device).eval(), metadata


def step_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(spec: str, root: str | Path) -> Path:
    """``latest`` -> newest complete checkpoint under ``root``; otherwise an explicit directory."""
    if spec == "latest":
        dirs = step_dirs(root)
        if not dirs:
            raise CheckpointError(f"--resume latest: no checkpoint under {root}; train first or pass a directory")
        return dirs[-1]
    path = Path(spec)
    if not path.is_dir():
        raise CheckpointError(f"--resume {spec}: not a checkpoint directory")
    return path


def staging_dir(final: str | Path) -> Path:
    """Where a checkpoint directory is assembled before :func:`publish` renames it into place."""
    final = Path(final)
    return final.with_name(f".tmp-{final.name}")


def discard(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def publish(staging: str | Path, final: str | Path) -> None:
    """Atomically move a completely written checkpoint directory to its final name."""
    final = Path(final)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def prune(root: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (and stale temporary directories)."""
    root = Path(root)
    for stale in root.glob(".tmp-step_*"):
        discard(stale)
    for old in step_dirs(root)[:-keep_last]:
        discard(old)


def export_weights(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
                   extra: dict | None = None) -> Path:
    """Copy a checkpoint's inference weights to one small file (``dtype``), keeping and extending its metadata."""
    src = weights_file(src)
    metadata = read_metadata(src)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    model_cfg = ModelConfig(**metadata.pop("model_config"))
    save_weights(dst, state, model_cfg, {**metadata, **(extra or {})})
    return Path(dst)
