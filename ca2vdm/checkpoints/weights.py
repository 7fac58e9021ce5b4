"""Weights files: a model's weights with its config (and calibrations) in a safetensors file's metadata.

Every weights file records the model config in its metadata (and optional calibration data such as TeaCache
coefficients, the sampler settings, the codec: :mod:`ca2vdm.checkpoints.metadata`), so a single path is all inference
needs. A training checkpoint directory (:mod:`ca2vdm.training.checkpoint_dirs`) holds its EMA weights as
``ema.safetensors``, which is what a directory path loads. Files are written atomically (temporary file, then
rename). Every failure to read a checkpoint raises :class:`~ca2vdm.errors.CheckpointError` naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.config import ModelConfig, to_dict, validate_model
from ca2vdm.errors import CheckpointError, ConfigError, opt
from ca2vdm.io.atomic import save_tensors_atomic
from ca2vdm.io.paths import latest_checkpoint
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.models.registry import build_model

WEIGHTS_NAME = "ema.safetensors"
TRAINING_WEIGHTS_NAME = "model.safetensors"  # accelerate's raw (non-EMA) weights in a training checkpoint


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], model_cfg: ModelConfig,
                 extra: dict | None = None) -> None:
    """Write a video model's weights + config metadata atomically."""
    save_tensors(path, state_dict, {"model_config": to_dict(model_cfg), **(extra or {})})


def save_tensors(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tensors + JSON-encoded metadata atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(path, state_dict, {k: json.dumps(v) for k, v in metadata.items()})


def weights_file(path: str | Path) -> Path:
    """Resolve a checkpoint directory (``runs/<name>/checkpoints/latest``: the newest ``step_N``) or a
    .safetensors file to the weights file inference loads."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise CheckpointError(f"checkpoint {path!r} is not a path; pass {opt('checkpoint')} with a .safetensors file "
                              "or a training checkpoint directory")
    path = latest_checkpoint(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if path.exists() and not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file (a device, pipe or socket); pass "
                              f"{opt('checkpoint')} with a .safetensors file or a training checkpoint directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass {opt('checkpoint')} with a .safetensors file or a "
                              "training checkpoint directory (runs/<name>/checkpoints/step_N, or .../latest)")
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
                              "metadata); pass a file saved by ca2vdm training or ca2vdm export")
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


def metadata_of(path: str | Path) -> CheckpointMetadata:
    """The typed metadata a video model's weights file records (any version)."""
    path = weights_file(path)
    return CheckpointMetadata.from_raw(read_metadata(path), model_config_of(path), f"checkpoint {path}")


def load_model(path: str | Path, device: torch.device | str = "cpu",
               overrides: dict | None = None) -> tuple[CausalVideoModel, CheckpointMetadata]:
    """Build the model a checkpoint describes (its family from ``model.arch``; ``overrides``: model fields that do not
    change its weights, e.g. a Wan model's frame size) and load its weights; returns (model, its typed metadata).

    Raises :class:`CheckpointError` naming the file when it is missing, not a safetensors file, lacks ca2vdm
    metadata, is truncated, or holds weights that do not fit its recorded model config.
    """
    path = weights_file(path)
    metadata = read_metadata(path)
    if "lora" in metadata:  # an adapter holds the low-rank tensors only (ca2vdm.checkpoints.adapters)
        base = metadata.get("base_checkpoint")
        raise CheckpointError(f"{path} is a LoRA adapter (trained on {base}), not a model: fold it into its base with "
                              f"ca2vdm merge-lora {base} {path} MERGED.safetensors and use that (ca2vdm generate and "
                              "ca2vdm serve also take an adapter beside its base: --lora; load_pipeline: lora=)")
    cfg = model_config_of(path)
    if overrides:
        cfg = validate_model(dataclasses.replace(cfg, **overrides))
    model = build_model(cfg)
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
    return model.to(device).eval(), CheckpointMetadata.from_raw(metadata, cfg, f"checkpoint {path}")


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
