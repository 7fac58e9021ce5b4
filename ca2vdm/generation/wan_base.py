"""Generating from a downloaded Wan folder (``load_pipeline(base=..., checkpoint=..., size=(H, W))``, ``--base``).

The base folder (:mod:`ca2vdm.checkpoints.wan_folder`) gives the VAE, the UMT5 text encoder and its tokenizer, and the
transformer's sizes; the transformer's weights come from ``checkpoint`` in any format of
:mod:`ca2vdm.checkpoints.formats` (a Self-Forcing / CausVid / Causal Forcing / LongLive ``.pt``, a Wan or diffusers
folder or file) or one of our weights files (an export, a Wan model trained here), else from the folder itself. How a
foreign checkpoint is sampled (steps, shift, guidance, chunks, window, sinks) comes from the known-model table
(:func:`ca2vdm.config.presets.preset_for`); the caller's settings override it. A LongLive ``lora.pt`` given as an
adapter is folded into the weights; our adapters are applied as :func:`ca2vdm.load_pipeline` applies them.

Everything is checked before a weight is read: the folder and its parts, the frame size, and on a GPU the estimated
peak memory against the card's free memory (:mod:`ca2vdm.generation.wan_memory`), each one line naming the fix.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ca2vdm.checkpoints.adapters import LoraSpec, apply_adapters, lora_specs
from ca2vdm.checkpoints.formats import read_foreign
from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.wan_folder import WanFolder, find_wan_folder
from ca2vdm.checkpoints.weights import load_model, metadata_of, read_metadata
from ca2vdm.config import MODEL_CONFIGS, ModelConfig, validate_model
from ca2vdm.config.presets import PRESETS, preset_for
from ca2vdm.encoders.codec import Codec, check_model_fits
from ca2vdm.encoders.umt5 import UMT5TextEncoder
from ca2vdm.errors import CheckpointError, SettingError
from ca2vdm.generation.wan_memory import check_fits_gpu, estimate
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.models.registry import build_model
from ca2vdm.runtime.device import DTYPES, resolve_dtype

FOREIGN_SIZE = "wan-1.3b"  # the named size of a foreign checkpoint's frames (480x832) and prompts (512 tokens)
LONGLIVE_LORA = (".pt", ".pth")  # an adapter file of these suffixes is LongLive's lora.pt, folded into the weights


@dataclass
class WanParts:
    """What a pipeline is made of when it comes from a base folder."""
    model: CausalVideoModel     # on the CPU, in the dtype asked for
    metadata: CheckpointMetadata
    codec: Codec
    text_encoder: UMT5TextEncoder


def frame_fields(cfg: ModelConfig, size: tuple[int, int] | None, factor: int) -> dict:
    """The model fields (``resolution``, ``width``: latent height and width) of frames of ``size`` = (height, width)
    pixels through a codec down-sampling by ``factor``; {} for None. SettingError for a size the model cannot take."""
    if size is None:
        return {}
    height, width = size
    if cfg.arch != "wan" and (height, width) != (cfg.resolution * factor, cfg.frame_width * factor):
        raise SettingError("size", f"{height}x{width}", f"applies to Wan models (model.arch=wan); this model's "
                           f"frames are {cfg.resolution * factor}x{cfg.frame_width * factor}")
    step = factor * cfg.patch_size
    if height < step or width < step or height % step or width % step:
        raise SettingError("size", f"{height}x{width}", f"height and width must be multiples of {step} (the "
                           f"codec's {factor} x the patch's {cfg.patch_size}), e.g. "
                           f"{max(step, height // step * step)}x{max(step, width // step * step)}")
    return dict(resolution=height // factor, width=width // factor)


def _ours(checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``checkpoint`` is one of our weights files (or training checkpoints), not another project's."""
    if checkpoint is None or Path(checkpoint).suffix in (".pt", ".pth"):
        return False
    try:
        read_metadata(checkpoint)
    except CheckpointError:
        return False
    return True


def _config(folder: WanFolder, checkpoint, size: tuple[int, int] | None, preset: str) -> tuple[ModelConfig, float]:
    """The model config a checkpoint runs under with this folder, and its guidance scale, from the configs alone (no
    weights read)."""
    if _ours(checkpoint):
        meta = metadata_of(checkpoint)
        cfg, guidance = meta.model, meta.sampler.cfg_scale
        if cfg.arch != "wan":
            raise SettingError("checkpoint", checkpoint, f"is a {cfg.arch} model; a Wan base folder goes with a Wan "
                               "transformer (leave the base out for this checkpoint)")
    else:
        cfg = ModelConfig(**{**MODEL_CONFIGS[FOREIGN_SIZE], **PRESETS[preset]["model"], **folder.fields,
                             "name": FOREIGN_SIZE})
        guidance = PRESETS[preset]["sampler"]["cfg_scale"]
    return validate_model(dataclasses.replace(cfg, **frame_fields(cfg, size, folder.factor))), guidance


def _check_memory(folder: WanFolder, cfg: ModelConfig, rows: int, device: torch.device, dtype: torch.dtype,
                  offload: bool) -> None:
    """On a GPU: its free memory against the estimated peak (SettingError naming the fix), before any weight."""
    if device.type != "cuda":
        return
    memory, bf16 = (estimate(cfg, folder.vae_config, folder.text_config, d, rows) for d in (dtype, DTYPES["bf16"]))
    size = f"{cfg.resolution * folder.factor}x{cfg.frame_width * folder.factor}"
    check_fits_gpu(memory, torch.cuda.mem_get_info(device)[0], size=size, dtype=dtype, offload=offload, bf16=bf16)


def load_base(base: str | os.PathLike, checkpoint: str | os.PathLike | None, device: torch.device, *,
              dtype: str | torch.dtype | None = None, size: tuple[int, int] | None = None,
              offload_text_encoder: bool = False, lora: LoraSpec | list[LoraSpec] | None = None) -> WanParts:
    """The model, metadata, codec and text encoder of ``checkpoint`` (None: the folder's own transformer) with the
    Wan folder ``base``, at ``size`` (height, width) pixels (None: the checkpoint's own, 480x832 for another
    project's), in ``dtype`` (None: bf16 on CUDA, fp32 on the CPU) for ``device``; checked first (module docstring)."""
    folder = find_wan_folder(base)
    if checkpoint is not None and not Path(checkpoint).exists():
        raise SettingError("checkpoint", checkpoint, "does not exist; give the transformer's weights (a "
                           "Self-Forcing / CausVid / LongLive .pt, a Wan or diffusers folder, or our .safetensors)")
    specs = lora_specs(lora)
    folded = [(path, scale) for path, scale in specs if path.suffix in LONGLIVE_LORA]
    ours = [spec for spec in specs if spec not in folded]
    if len(folded) > 1:
        raise SettingError("lora", folded[1][0], "one LongLive lora.pt at a time (it is folded into the weights)")
    preset = preset_for(checkpoint, lora=bool(folded))
    cfg, guidance = _config(folder, checkpoint, size, preset)
    torch_dtype = resolve_dtype(dtype, device)
    width = folder.text_config["d_model"]
    if cfg.text_dim != width:
        raise SettingError("checkpoint", checkpoint, f"reads prompt vectors {cfg.text_dim} wide, but {base}'s text "
                           f"encoder gives {width}; give the base folder this transformer was trained with")
    _check_memory(folder, cfg, 2 if guidance != 1 else 1, device, torch_dtype, offload_text_encoder)
    frames = frame_fields(cfg, size, folder.factor)
    if _ours(checkpoint):
        model, meta = load_model(checkpoint, "cpu", overrides=frames)
        model = apply_adapters(model, ours, checkpoint)
    else:
        foreign = read_foreign(folder.transformer if checkpoint is None else checkpoint, preset=preset,
                               overrides={"model": {"num_heads": folder.fields["num_heads"], **frames}},
                               lora=folded[0][0] if folded else None, lora_scale=folded[0][1] if folded else 1.0)
        model = build_model(foreign.config)
        model.load_state_dict(foreign.weights.state)
        model = apply_adapters(model.eval(), ours, checkpoint or base)
        meta = CheckpointMetadata(foreign.config, foreign.sampler, raw=foreign.raw)
    codec = folder.codec(device, torch_dtype)
    check_model_fits(codec, meta.model.in_channels)
    encoder = folder.text_encoder(meta.model.text_tokens, device, torch_dtype, offload_text_encoder)
    return WanParts(model.to(torch_dtype), dataclasses.replace(meta, codec=codec.metadata()), codec, encoder)
