"""LoRA adapter files: what a LoRA run publishes (``adapter.safetensors``) and how inference applies them to a base.

An adapter file holds only the adapter's tensors (peft's format, :mod:`ca2vdm.models.lora`) and, in its metadata,
what the run's weights file would record (``model_config``, sampler settings, codec, ``train_config``, step) plus
``lora`` (rank, alpha, targets) and the base it adapts: ``base_checkpoint`` (``train.init_from`` as given) and
``base_weights_sha256``, a hash of the base's tensors (:func:`weights_hash`, taken in float16 so a float16 export of
the base matches the float32 weights it came from). An adapter meets only the base it was trained on: any other is
refused with one line naming both. Several adapters stack: each is checked against the base, then each, times its
scale, is folded into the weights (W + s1 dW1 + s2 dW2 ...); a scale of 0 leaves the base untouched, bit for bit.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ca2vdm.checkpoints.weights import load_model, read_metadata, save_weights, weights_file
from ca2vdm.config.lora import LORA_SCALE
from ca2vdm.errors import CheckpointError, SettingError, opt

ADAPTER_NAME = "adapter.safetensors"  # in a LoRA run's checkpoint folder, beside the resume state
LoraSpec = str | os.PathLike | tuple[str | os.PathLike, float]  # a path (scale 1), or (path, scale)


@dataclass(frozen=True)
class Adapter:
    """An adapter file: its tensors (peft's format), its settings and the base it was trained on."""
    path: Path
    tensors: dict[str, torch.Tensor]
    settings: dict          # rank, alpha, targets, target_modules
    base_sha256: str
    base_checkpoint: str


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a model's tensors (names, shapes and values as float16, in name order): the base's identity."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float16 if state[name].is_floating_point() else None)
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_hash(path: str | os.PathLike) -> str:
    """:func:`weights_hash` of a checkpoint's weights, read from its file."""
    path = weights_file(path)
    try:
        return weights_hash(load_file(str(path)))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt (truncated or damaged): {e}") from None


def adapter_file(path: str | os.PathLike) -> Path:
    """A LoRA run's checkpoint folder or an adapter file -> the adapter file; CheckpointError if there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTER_NAME
    if not path.is_file():
        raise CheckpointError(f"{opt('lora', path)}: no adapter there; pass a LoRA run's checkpoint folder "
                              f"(runs/<name>/checkpoints/step_N) or its {ADAPTER_NAME}")
    return path


def read_adapter(path: str | os.PathLike) -> Adapter:
    """Read an adapter file (or a LoRA run's checkpoint folder); CheckpointError naming it if it is not one."""
    path = adapter_file(path)
    metadata = read_metadata(path)
    settings = metadata.get("lora")
    if not isinstance(settings, dict) or not isinstance(metadata.get("base_weights_sha256"), str):
        raise CheckpointError(f"{path} is not a LoRA adapter (its metadata records no lora settings); pass the "
                              f"{ADAPTER_NAME} of a run trained with train.lora")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"adapter {path} is corrupt (truncated or damaged): {e}") from None
    return Adapter(path, tensors, settings, metadata["base_weights_sha256"], str(metadata.get("base_checkpoint")))


def adapter_metadata(settings: dict, base_sha256: str, base_checkpoint: str) -> dict:
    """The entries that make a weights file's metadata an adapter's."""
    return {"lora": settings, "base_weights_sha256": base_sha256, "base_checkpoint": base_checkpoint}


def lora_specs(lora: LoraSpec | Iterable[LoraSpec] | None) -> list[tuple[Path, float]]:
    """``lora=`` of the API (a path, (path, scale), or a list of those) -> [(path, scale)]; SettingError naming
    ``lora`` for anything else, or a scale that is not a finite number in :data:`~ca2vdm.config.lora.LORA_SCALE`'s
    range."""
    if lora is None:
        return []
    items = [lora] if isinstance(lora, (str, os.PathLike, tuple)) else list(lora)
    specs = []
    for item in items:
        path, scale = item if isinstance(item, tuple) and len(item) == 2 else (item, 1.0)
        if not isinstance(path, (str, os.PathLike)):
            raise SettingError("lora", repr(item), "give an adapter's path, (path, scale), or a list of them")
        specs.append((Path(path), LORA_SCALE.check("lora", scale)))
    return specs


def check_base(adapter: Adapter, base_sha256: str, base: str | os.PathLike) -> None:
    """CheckpointError (one line naming both) unless ``adapter`` was trained on the base whose hash is given."""
    if adapter.base_sha256 != base_sha256:
        raise CheckpointError(f"adapter {adapter.path} was trained on {adapter.base_checkpoint} (weights "
                              f"{adapter.base_sha256[:12]}), not on {base} (weights {base_sha256[:12]}); use it "
                              "with the checkpoint it was trained on")


def apply_adapters(model: nn.Module, lora: LoraSpec | Iterable[LoraSpec] | None, base: str | os.PathLike) -> nn.Module:
    """``model`` (the checkpoint ``base``, owned by the caller and changed in place) with every adapter of ``lora``
    folded into its weights, each times its scale. Every adapter is read and checked against the base before any
    weight changes; adapters with scale 0 are left out (the base exactly)."""
    specs = lora_specs(lora)
    if not specs:
        return model
    adapters = [(read_adapter(path), scale) for path, scale in specs]
    base_sha256 = weights_hash(model.state_dict())
    for adapter, _ in adapters:
        check_base(adapter, base_sha256, base)
    from ca2vdm.models import lora as layers  # peft loads transformers (2.5 s): only when an adapter is used

    for index, (adapter, scale) in enumerate(adapters):
        if scale == 0:
            continue
        try:
            model = layers.merge(model, adapter.tensors, adapter.settings, scale, f"adapter{index}")
        except CheckpointError as e:
            raise CheckpointError(f"adapter {adapter.path} cannot be applied to {base}: {e}") from None
    return model


def save_merged(base: str | os.PathLike, lora: LoraSpec | Iterable[LoraSpec], dst: str | os.PathLike,
                dtype: torch.dtype | None = None) -> Path:
    """Write the checkpoint ``base`` with the adapters of ``lora`` folded in to ``dst``: a plain checkpoint (the base's
    metadata, plus ``merged_lora``), in ``dtype`` (None: the base file's). A codec path recorded relative to the
    base's folder is rewritten relative to ``dst``'s."""
    source, dst = weights_file(base), Path(dst)
    model, meta = load_model(source)
    if dtype is None:
        with safe_open(str(source), framework="pt") as f:
            dtype = next(t.dtype for t in map(f.get_tensor, f.keys()) if t.is_floating_point())
    model = apply_adapters(model, lora, base)
    entries = meta.entries()
    path = entries["codec"].get("path")
    if path and not Path(path).is_absolute() and (source.parent / path).exists():
        entries["codec"]["path"] = os.path.relpath(source.parent / path, dst.parent)
    entries["merged_lora"] = [{"adapter": str(p), "scale": s} for p, s in lora_specs(lora)]
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_weights(dst, state, meta.model, entries)
    return dst
