"""Weights in the formats users hold, read and converted into a model family's names, then exported as our weights
file (``ca2vdm export``): what a checkpoint of another project needs to run here.

Wan 2.1 transformers (``model.arch=wan``, names mapped by :mod:`ca2vdm.models.wan.formats`):

* a diffusers folder: ``transformer/config.json`` and ``diffusion_pytorch_model*.safetensors`` shards (a whole
  ``-Diffusers`` pipeline folder, or its ``transformer/`` folder);
* an original Wan folder (``config.json`` with Wan's fields and ``diffusion_pytorch_model*.safetensors``) or one Wan
  ``.safetensors`` file;
* a Self-Forcing / CausVid / Causal Forcing / LongLive ``.pt``: ``generator_ema`` (else ``generator``, else
  ``model``) holding Wan names under ``model.``, read with ``torch.load(weights_only=True, mmap=True)``;
* LongLive's LoRA (``lora.pt``: peft's tensors, under ``generator_lora`` or bare) folded into its base
  (``W + alpha / rank * B A``).

Nothing touches the network. A file of another kind is refused in one line naming what was expected and the keys
found; weights that miss or add tensors against the model are refused with their count and the first few names.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.config import MODEL_CONFIGS, ModelConfig, SamplerSettings, validate_model
from ca2vdm.config.presets import PRESETS
from ca2vdm.errors import CheckpointError, ConfigError
from ca2vdm.models.registry import build_model, spec_of
from ca2vdm.models.wan.formats import fields_from_diffusers, fields_from_state, fields_from_wan

EXPECTED = ("a diffusers folder (transformer/config.json + diffusion_pytorch_model*.safetensors), Wan's (config.json "
            "+ diffusion_pytorch_model*.safetensors, or one such file) or a Self-Forcing / CausVid / Causal Forcing / "
            "LongLive .pt (generator_ema or generator)")
SHARDS = "diffusion_pytorch_model*.safetensors"
GENERATORS = ("generator_ema", "generator", "model")  # where a .pt keeps its weights, in the order of preference
SHOWN = 4  # names listed in a message


@dataclass
class ForeignWeights:
    """Weights read from another project's files: the format, the state dict in the family's names, and the model
    fields the files record (sizes)."""
    format: str
    state: dict[str, torch.Tensor]
    fields: dict


def _names(keys, count: int | None = None) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else "")
    return f"{count if count is not None else len(keys)} ({shown})"


def _refuse(path: Path, found: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a Wan transformer checkpoint: expected {EXPECTED}; found {found}")


def _safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    state = {}
    for file in files:
        try:
            state.update(load_file(str(file), device="cpu"))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{file} is corrupt (truncated or damaged): {' '.join(str(e).split())[:200]}") \
                from None
    return state


def _shards(folder: Path) -> list[Path]:
    """The weight shards of a folder, all of them present (an index names them)."""
    files = sorted(folder.glob(SHARDS))
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        named = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
        missing = [p.name for p in named if not p.is_file()]
        if missing:
            raise CheckpointError(f"{folder} lists {len(named)} weight shards in {index.name} but "
                                  f"{_names(missing)} are missing; copy the whole folder")
        files = named
    if not files:
        raise _refuse(folder, f"no {SHARDS} beside config.json")
    return files


def _name_kind(keys) -> str | None:
    """The naming of a flat state dict: diffusers, wan (maybe under model.diffusion_model.) or self-forcing."""
    keys = list(keys)
    if any(k.endswith("condition_embedder.time_proj.weight") for k in keys):
        return "diffusers"
    if any(k.endswith("head.modulation") for k in keys):
        wrapped = any(k.startswith(("model.", "_fsdp_wrapped_module.")) and "diffusion_model." not in k for k in keys)
        return "self-forcing" if wrapped else "wan"
    return None


def _pt(path: Path, generator: str | None) -> tuple[str, Mapping[str, torch.Tensor]]:
    """(format, state) of a ``.pt`` / ``.pth`` file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # zip, pickle and mmap errors of a truncated or foreign file alike
        raise CheckpointError(f"{path} is not a readable .pt file (truncated, damaged or not saved by torch.save): "
                              f"{' '.join(str(e).split())[:160]}") from None
    if not isinstance(saved, Mapping):
        raise _refuse(path, f"a {type(saved).__name__}")
    if "generator_lora" in saved or any(".lora_A." in k for k in saved):
        raise CheckpointError(f"{path} is a LoRA adapter (LongLive's lora.pt), not a transformer; export its base and "
                              "give this file as the LoRA to fold in")
    nested = [k for k in GENERATORS if isinstance(saved.get(k), Mapping)]
    if generator is not None and generator not in nested:
        raise CheckpointError(f"{path} has no {generator!r} weights; it holds {', '.join(nested) or 'a flat dict'}")
    if nested:
        return "self-forcing", saved[generator or nested[0]]
    kind = _name_kind(saved)
    if kind is None:
        raise _refuse(path, f"keys {_names(saved)}")
    return kind, saved


def read_weights(path: str | Path, *, generator: str | None = None, num_heads: int | None = None) -> ForeignWeights:
    """The Wan transformer weights at ``path`` in our names, with the sizes the files record (``num_heads``: the
    heads of a bare state dict, default its width / 128); ``generator`` picks a ``.pt``'s entry."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give {EXPECTED}")
    config = {}
    if path.is_dir():
        folder = path / "transformer" if (path / "transformer/config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise _refuse(path, f"a folder of {_names(sorted(p.name for p in path.iterdir()))} files")
        config = json.loads((folder / "config.json").read_text())
        fmt = "diffusers" if "num_attention_heads" in config else "wan" if "dim" in config else None
        if fmt is None:
            raise _refuse(path, f"a config.json of {_names(config)} keys")
        state = _safetensors(_shards(folder))
    elif path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        fmt, state = _pt(path, generator)
    else:
        state = _safetensors([path])
        fmt = _name_kind(state)
        if fmt is None:
            raise _refuse(path, f"a safetensors file of keys {_names(state)}")
    state = spec_of("wan").converters[fmt](state)
    try:
        fields = fields_from_diffusers(config) if "num_attention_heads" in config else \
            {**fields_from_state(state, num_heads or config.get("num_heads")),
             **(fields_from_wan(config) if config else {})}
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    return ForeignWeights(fmt, state, fields)


def fold_lora(state: dict[str, torch.Tensor], path: str | Path, alpha: float | None = None,
              scale: float = 1.0) -> int:
    """Fold LongLive's LoRA (``lora.pt``) into ``state`` (our names) in place: ``W += scale * alpha / rank * B @ A``
    for every adapted layer (``alpha`` default: the rank, LongLive's). Returns the number of layers changed."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable .pt file: {' '.join(str(e).split())[:160]}") from None
    tensors = saved.get("generator_lora", saved) if isinstance(saved, Mapping) else {}
    pairs = {k.removeprefix("base_model.model."): v for k, v in tensors.items() if ".lora_" in k}
    if not pairs:
        raise CheckpointError(f"{path} is not a LoRA adapter (LongLive's lora.pt: peft's lora_A / lora_B tensors); "
                              f"found keys {_names(tensors if isinstance(tensors, Mapping) else [])}")
    renamed = spec_of("wan").converters["self-forcing"](pairs)
    layers = sorted({k.split(".lora_")[0] for k in renamed})
    unknown = [m for m in layers if f"{m}.weight" not in state]
    if unknown:
        raise CheckpointError(f"{path} adapts layers the base does not have: {_names(unknown)}")
    for module in layers:
        down, up = renamed[f"{module}.lora_A.weight"].float(), renamed[f"{module}.lora_B.weight"].float()
        weight = state[f"{module}.weight"]
        factor = scale * (alpha if alpha is not None else down.shape[0]) / down.shape[0]
        state[f"{module}.weight"] = (weight.float() + factor * up @ down).to(weight.dtype)
    return len(layers)


def check_fits(state: Mapping[str, torch.Tensor], cfg: ModelConfig, source: str | Path) -> None:
    """CheckpointError unless ``state`` has exactly the tensors (names and shapes) of ``cfg``'s model (built on the
    meta device: no memory)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit a {cfg.name} model: {_names(missing)} tensors missing, "
                              f"{_names(unexpected)} unexpected; check the model's sizes or the file")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
             if tuple(state[k].shape) != expected[k]]
    if wrong:
        raise CheckpointError(f"{source} does not fit a {cfg.name} model: {_names(wrong)} tensors of another shape; "
                              "check the model's sizes (model.num_heads, ...)")


@dataclass
class ForeignModel:
    """Another project's transformer ready to build: its model config, sampler settings, weights and provenance."""
    config: ModelConfig
    sampler: SamplerSettings
    weights: ForeignWeights
    raw: dict               # what an export records of where it came from


def read_foreign(src: str | Path, *, preset: str, model: str = "wan-1.3b",
                 overrides: Mapping[str, Mapping] | None = None, lora: str | Path | None = None,
                 lora_alpha: float | None = None, lora_scale: float = 1.0,
                 generator: str | None = None) -> ForeignModel:
    """The weights at ``src`` (any format above) with the model config they run under (the named size ``model``, the
    ``preset``'s window layout, the sizes the files record, then ``overrides["model"]``) and the sampler settings
    (the preset's, then ``overrides["sampler"]``), checked to fit; a LongLive LoRA folded in (times ``lora_scale``)."""
    overrides = {section: dict(values) for section, values in (overrides or {}).items()}
    unknown = set(overrides) - {"model", "sampler"}
    if unknown:
        raise ConfigError(f"overrides of {', '.join(sorted(unknown))}: an export sets model.* and sampler.* only")
    chosen = overrides.get("model", {})
    weights = read_weights(src, generator=generator, num_heads=chosen.get("num_heads"))
    if lora is not None:
        fold_lora(weights.state, lora, lora_alpha, lora_scale)
    fields = {**MODEL_CONFIGS[model], **PRESETS[preset]["model"], **weights.fields, **chosen, "name": model}
    try:
        cfg = validate_model(ModelConfig(**fields))
        sampler = SamplerSettings(**{**PRESETS[preset]["sampler"], **overrides.get("sampler", {})})
    except TypeError as e:
        raise ConfigError(f"an override names no setting: {e}") from None
    check_fits(weights.state, cfg, src)
    raw = {"source": str(src), "source_format": weights.format, "preset": preset,
           **({"folded_lora": str(lora), "folded_lora_alpha": lora_alpha} if lora is not None else {})}
    return ForeignModel(cfg, sampler, weights, raw)


def export_foreign(src: str | Path, dst: str | Path, *, preset: str, model: str = "wan-1.3b",
                   overrides: Mapping[str, Mapping] | None = None, lora: str | Path | None = None,
                   lora_alpha: float | None = None, generator: str | None = None, dtype: torch.dtype = torch.bfloat16,
                   codec: Mapping | None = None) -> tuple[ModelConfig, ForeignWeights]:
    """Write the weights at ``src`` (:func:`read_foreign`) as our weights file ``dst``, recording the model config,
    the sampler settings, the codec and where they came from."""
    foreign = read_foreign(src, preset=preset, model=model, overrides=overrides, lora=lora, lora_alpha=lora_alpha,
                           generator=generator)
    metadata = CheckpointMetadata(foreign.config, foreign.sampler,
                                  dict(codec or {"kind": "diffusers", "path": None}), raw=foreign.raw)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in foreign.weights.state.items()}
    save_weights(dst, state, foreign.config, metadata.entries())
    return foreign.config, foreign.weights
