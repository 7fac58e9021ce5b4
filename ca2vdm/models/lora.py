"""LoRA layers on a finished model through peft: injected for training (the base frozen), or an adapter's tensors
loaded into them and folded into the base weights for inference.

peft does the work (``inject_adapter_in_model``, ``LoraModel``, ``set_peft_model_state_dict``, ``merge_and_unload``);
this module maps the project's settings onto it. Every targeted linear layer ``W`` computes ``W x + s B A x`` with
``s = scale * alpha / rank``; merging replaces ``W`` by ``W + s B A``. An adapter's tensors are kept in peft's own
format (``<module>.lora_A.weight``, ``<module>.lora_B.weight``). Importing peft loads transformers (about 2.5 s), so
the front ends import this module only when an adapter is used.
"""
from __future__ import annotations

import re

import peft
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from ca2vdm.config.lora import LoraConfig
from ca2vdm.errors import CheckpointError, ConfigError
from ca2vdm.models.registry import spec_of

TRAINED = "default"  # peft's name of the adapter a training run injects


def target_pattern(model: nn.Module, targets: list[str]) -> str:
    """One regular expression (full match against a module's name) of every layer ``targets`` names: a group of the
    model's family (:attr:`~ca2vdm.models.registry.ModelSpec.lora_groups`) or a regular expression. ConfigError for
    a target that names no layer of ``model``."""
    groups = spec_of(model.cfg).lora_groups
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(re.fullmatch(groups.get(target, target), name) for name in names):
            raise ConfigError(f"train.lora.targets: {target!r} names no layer of this {model.cfg.arch} model; its "
                              f"groups: {', '.join(groups)}, or a regular expression of its module names")
    return "|".join(f"(?:{groups.get(t, t)})" for t in targets)


def recorded_settings(lora: LoraConfig, model: nn.Module) -> dict:
    """What an adapter file records of its settings: rank, alpha, the targets as given and as one pattern (resolved
    against ``model``'s family, so loading the adapter needs no registry)."""
    return {"rank": lora.rank, "alpha": lora.alpha, "targets": list(lora.targets),
            "target_modules": target_pattern(model, lora.targets)}


def _peft_config(settings: dict) -> peft.LoraConfig:
    return peft.LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"], target_modules=settings["target_modules"],
                           lora_dropout=0.0, bias="none")


def check_rank(model: nn.Module, lora: LoraConfig, pattern: str) -> None:
    """ConfigError for a rank above the smallest width of the linear layers the adapter adapts: beyond it the
    adapter grows (linearly in the rank) without adding anything a full-rank change of that layer would not."""
    widths = {name: min(m.in_features, m.out_features) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and re.fullmatch(pattern, name)}
    if widths and lora.rank > min(widths.values()):
        name = min(widths, key=widths.get)
        adapter = sum(lora.rank * (m.in_features + m.out_features) for n, m in model.named_modules() if n in widths)
        base = sum(p.numel() for p in model.parameters())
        raise ConfigError(f"train.lora.rank={lora.rank} is above the smallest width of the layers it adapts "
                          f"({widths[name]}, {name}): the adapter would hold {adapter / base:.1f}x the model's "
                          f"parameters for no more than a full update; set train.lora.rank <= {widths[name]}")


def for_training(model: nn.Module, lora: LoraConfig) -> nn.Module:
    """Freeze ``model`` and inject a fresh adapter (``B`` = 0: the model's output is unchanged at step 0), in place;
    only the adapter's tensors require gradients. With ``base_dtype=bf16`` the frozen linear layers are cast. A rank
    above the adapted layers' smallest width is refused first (:func:`check_rank`)."""
    settings = recorded_settings(lora, model)
    check_rank(model, lora, settings["target_modules"])
    model.requires_grad_(False)
    try:
        peft.inject_adapter_in_model(_peft_config(settings), model, TRAINED)
    except ValueError as e:  # no module matched, or one of a kind LoRA cannot adapt
        raise ConfigError(f"train.lora.targets={lora.targets} does not fit {type(model).__name__}: "
                          f"{' '.join(str(e).split())[:300]}") from None
    if lora.base_dtype == "bf16":
        for module in model.modules():
            if isinstance(module, nn.Linear) and not any(p.requires_grad for p in module.parameters()):
                module.to(torch.bfloat16)
    return model


def trainable_names(model: nn.Module) -> set[str]:
    """Names of the parameters that train (with LoRA: the adapter's)."""
    return {name for name, p in model.named_parameters() if p.requires_grad}


def adapter_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained adapter's tensors in ``state`` (the state dict of a model made by :func:`for_training`, or its
    EMA's), in peft's format."""
    return peft.get_peft_model_state_dict(model, state_dict=state, adapter_name=TRAINED)


def attach(model: nn.Module, tensors: dict[str, torch.Tensor], settings: dict, scale: float,
           name: str) -> peft.LoraModel:
    """Add the adapter (its peft-format ``tensors`` and recorded ``settings``) to ``model`` as live LoRA layers named
    ``name``, weighted by ``scale``; returns peft's tuner (``merge_and_unload``). CheckpointError if they do not fit."""
    device = model.device
    tuner = peft.LoraModel(model, _peft_config(settings), name, low_cpu_mem_usage=True)  # no random init: loaded now
    try:
        result = peft.set_peft_model_state_dict(model, {k: v.to(device) for k, v in tensors.items()},
                                                adapter_name=name, low_cpu_mem_usage=True)
    except RuntimeError as e:  # tensors of another shape
        raise CheckpointError(f"its tensors do not fit the model ({str(e).strip().splitlines()[-1].strip()})") from None
    empty = [n for n, p in model.named_parameters() if p.is_meta]
    if result.unexpected_keys or empty:
        raise CheckpointError(f"its tensors do not fit the model (unexpected {list(result.unexpected_keys)[:3]}, "
                              f"missing {empty[:3]})")
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale(name, scale)
    return tuner


def merge(model: nn.Module, tensors: dict[str, torch.Tensor], settings: dict, scale: float,
          name: str = "merged") -> nn.Module:
    """``model`` with the adapter times ``scale`` folded into its weights (``W + scale * alpha / rank * B A``); the
    same module object, its LoRA layers unloaded, so it has the base's structure and state-dict keys again."""
    return attach(model, tensors, settings, scale, name).merge_and_unload(adapter_names=[name])
