"""The model families by ``ModelConfig.arch``: how each builds its model, which of its layers LoRA's named groups mean,
which weight formats it converts, and the tiny configuration the conformance suite runs it at (after torchtitan's
model specs).

Everything above :mod:`ca2vdm.models` builds a model with :func:`build_model` and speaks to it through
:class:`~ca2vdm.models.base.CausalVideoModel`. Adding a family is a module with its model class and one
:class:`ModelSpec` here (docs/architecture.md, "Adding a model family"); ``tests/test_model_conformance.py`` then runs
it through the same checks as every other family.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ca2vdm.config import ARCHS, MODEL_CONFIGS, ModelConfig, validate_model
from ca2vdm.errors import ConfigError
from ca2vdm.models.base import CausalVideoModel, ContextCache
from ca2vdm.models.dit import CausalVideoDiT
from ca2vdm.models.kv_cache import KVCache
from ca2vdm.models.wan import formats as wan_formats
from ca2vdm.models.wan.cache import WanCache

# A weight format's converter: a state dict as found in a file of that format -> this family's parameter names.
Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelSpec:
    """One model family."""
    arch: str
    model: Callable[[ModelConfig], CausalVideoModel]  # builds the model (random weights) from a validated config
    cache: type[ContextCache]       # its context cache (the model's new_cache makes one)
    lora_groups: Mapping[str, str]  # train.lora.targets' group names -> a regular expression of module names
    tiny: Mapping[str, object]      # ModelConfig fields of a tiny instance (tests, dry runs)
    conditions: tuple[str, ...] = ("labels", "prompts", "none")  # what it may be conditioned on (config.conditioning)
    converters: Mapping[str, Converter] = field(default_factory=dict)  # weight formats it reads besides its own
    description: str = ""


DIT = ModelSpec(
    arch="dit", model=CausalVideoDiT, cache=KVCache,
    lora_groups={
        # fused q/k/v and output of both self-attentions; a text model's cross-attention (q, the prompt's k/v, output)
        "attention": r"stack\.blocks\.\d+\.((spatial|temporal)\.(qkv|proj)|cross\.(q|kv|proj))",
        "mlp": r"stack\.blocks\.\d+\.mlp\.(0|2)",                             # the two MLP layers
        "adaln": r"stack\.blocks\.\d+\.adaLN_modulation\.1",                  # the blocks' adaLN-Zero modulation
    },
    tiny=dict(resolution=16, patch_size=4, hidden_size=32, depth=2, num_heads=2, chunk_frames=2, max_context_frames=5),
    description="Ca2-VDM's causal spatial-temporal DiT: factorised spatial / block-causal temporal attention, periodic "
                "temporal RoPE, a bounded ring of per-token temporal K/V (ca2vdm.models.dit)")



def _causal_wan(cfg: ModelConfig) -> CausalVideoModel:
    """The causal Wan (imported on first use: diffusers takes seconds to import)."""
    from ca2vdm.models.wan.model import CausalWan

    return CausalWan(cfg)


_WAN_BLOCK = r"blocks\.\d+\."
_WAN_ATTENTION, _WAN_FFN = r"\.(to_q|to_k|to_v|to_out\.0)", r"ffn\.(net\.0\.proj|net\.2)"
WAN = ModelSpec(
    arch="wan", model=_causal_wan, cache=WanCache,
    lora_groups={
        "attention": _WAN_BLOCK + "attn1" + _WAN_ATTENTION,  # self-attention's q, k, v and output
        "cross": _WAN_BLOCK + "attn2" + _WAN_ATTENTION,      # cross-attention to the prompt
        "mlp": _WAN_BLOCK + _WAN_FFN,                        # the feed-forward's two layers
        # LongLive's target set: every Linear of the blocks' attention and feed-forward (10 a block)
        "longlive": f"{_WAN_BLOCK}(attn1|attn2){_WAN_ATTENTION}|{_WAN_BLOCK}{_WAN_FFN}",
    },
    tiny={k: v for k, v in MODEL_CONFIGS["wan-tiny"].items() if k != "arch"},
    conditions=("prompts", "none"),
    converters=wan_formats.CONVERTERS,
    description="Wan 2.1's transformer (diffusers' WanTransformer3DModel, its names and modules) run block-causally "
                "over chunks of latent frames: joint 3-D attention over a bounded cache of frame slots, absolute or "
                "ring positions (ca2vdm.models.wan)")

REGISTRY: dict[str, ModelSpec] = {spec.arch: spec for spec in (DIT, WAN)}
assert tuple(REGISTRY) == ARCHS, "ca2vdm.config.ARCHS (the torch-free list) must name every registered family"


def spec_of(arch: str | ModelConfig) -> ModelSpec:
    """The family of ``arch`` (a name, or a model config's ``arch``); ConfigError naming the registered ones."""
    name = arch.arch if isinstance(arch, ModelConfig) else arch
    if name not in REGISTRY:
        raise ConfigError(f"model.arch={name!r} is not a registered model family; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build_model(cfg: ModelConfig) -> CausalVideoModel:
    """A model of ``cfg``'s family with random weights (load a checkpoint's with ``ca2vdm.checkpoints.weights``)."""
    return spec_of(cfg).model(validate_model(cfg))


def tiny_config(arch: str, **overrides) -> ModelConfig:
    """The family's tiny configuration (with ``overrides``), validated."""
    spec = spec_of(arch)
    return validate_model(ModelConfig(**{**spec.tiny, **overrides, "arch": arch, "name": f"{arch}-tiny"}))
