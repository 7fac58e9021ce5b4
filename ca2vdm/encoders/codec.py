"""Codecs between pixels and the space the diffusion model works in.

The model runs on (B, C, T, H, W) tensors in the codec's space. Every place where a video crosses into or out of
the model (training data, sample videos, ``infer/long_video.py``, benchmarks) goes through a :class:`Codec`:

* ``pixel``: identity, pixels in [-1, 1] (the shipped 32x32 demo model);
* ``diffusers``: any per-frame diffusers autoencoder loaded with ``from_pretrained`` (``AutoencoderKL`` as in
  Ca2-VDM, ``AutoencoderTiny``), latents ``(z - shift_factor) * scaling_factor`` with the factors of its config;
* ``autoencoder``: our own small autoencoder (a diffusers architecture trained by ``train/train_autoencoder.py``,
  which stores the measured latent scale in its config); loaded the same way.

Frames are encoded independently (no temporal compression), so chunks need no alignment with the codec. The
latent of a frame is the mean of the posterior (deterministic), as is usual for cached latent datasets.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from einops import rearrange

from ca2vdm.config.training import CODEC_KINDS, CodecConfig
from ca2vdm.errors import CodecError

PER_FRAME_AUTOENCODERS = ("AutoencoderKL", "AutoencoderTiny")
FRAMES_PER_CALL = 16  # frames encoded or decoded per autoencoder call: bounds activation memory


class Codec(Protocol):
    channels: int       # channels of the encoded tensor (the model's in_channels)
    factor: int         # spatial down-sampling of encode
    pixel_space: bool   # the model works on pixels in [-1, 1] (generated chunks are clamped), not on latents

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) pixels in [-1, 1] -> (B, channels, T, H / factor, W / factor)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`, back to pixels in [-1, 1]."""

    def metadata(self) -> dict:
        """What a checkpoint records to rebuild this codec."""


class PixelCodec:
    """Identity codec: the model works on pixels."""
    channels = 3
    factor = 1
    pixel_space = True

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def metadata(self) -> dict:
        return {"kind": "pixel"}


class DiffusersCodec:
    """A per-frame diffusers autoencoder, frozen, with its latent scaling."""
    pixel_space = False

    def __init__(self, autoencoder: torch.nn.Module, config: CodecConfig):
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        ae = autoencoder.config
        self.config = config
        self.scaling = ae.scaling_factor if config.scaling_factor is None else config.scaling_factor
        self.shift = (getattr(ae, "shift_factor", None) or 0.0) if config.shift_factor is None else config.shift_factor
        self.channels = ae.latent_channels
        self.factor = downsampling_factor(dict(ae), type(autoencoder).__name__)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        frames = rearrange(video, "b c t h w -> (b t) c h w").to(self._dtype)
        latents = torch.cat([self._encode_frames(part) for part in frames.split(FRAMES_PER_CALL)])
        latents = (latents.float() - self.shift) * self.scaling
        return rearrange(latents, "(b t) c h w -> b c t h w", b=video.shape[0]).to(video.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        frames = rearrange(latents.float() / self.scaling + self.shift, "b c t h w -> (b t) c h w").to(self._dtype)
        pixels = torch.cat([self.autoencoder.decode(part).sample for part in frames.split(FRAMES_PER_CALL)])
        return rearrange(pixels.float().clamp(-1, 1), "(b t) c h w -> b c t h w", b=latents.shape[0])

    def metadata(self) -> dict:
        return {**asdict(self.config), "scaling_factor": self.scaling, "shift_factor": self.shift,
                "class": type(self.autoencoder).__name__, "channels": self.channels, "factor": self.factor}

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.autoencoder.encode(frames)
        return out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents  # KL: posterior mean

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.autoencoder.parameters()).dtype


def downsampling_factor(ae_config: dict, class_name: str) -> int:
    """Spatial down-sampling of a per-frame diffusers autoencoder, from its config."""
    if class_name == "AutoencoderTiny":
        return ae_config["upsampling_scaling_factor"] ** (len(ae_config["encoder_block_out_channels"]) - 1)
    return 2 ** (len(ae_config["block_out_channels"]) - 1)


def autoencoder_config(config: CodecConfig) -> tuple[str, dict]:
    """The diffusers class name and config of ``config.path`` (no weights loaded); a clear error when missing."""
    from diffusers import AutoencoderKL

    if not config.path:
        raise CodecError(f"codec.kind={config.kind} needs codec.path: a directory written by save_pretrained")
    local = Path(config.path) / (config.subfolder or "")
    if not Path(config.path).exists() and _looks_local(config.path):
        raise CodecError(f"codec.path={config.path} is not a local directory (it does not exist); point it at an "
                         "autoencoder directory written by save_pretrained (e.g. checkpoints/ae-shapes128, or "
                         "<run>/checkpoints/step_N/autoencoder of train/train_autoencoder.py)")
    if Path(config.path).exists() and not (local / "config.json").is_file():
        inner = [d.name for d in (local.iterdir() if local.is_dir() else []) if (d / "config.json").is_file()]
        hint = f" (it has {', '.join(sorted(inner))}/ inside: point codec.path there)" if inner else ""
        raise CodecError(f"codec.path={config.path}: no autoencoder config.json in {local}{hint}; point codec.path at "
                         "a directory written by save_pretrained (and codec.subfolder at its autoencoder, e.g. vae)")
    try:
        ae_config = AutoencoderKL.load_config(config.path, subfolder=config.subfolder)  # any class's config.json
    except (OSError, ValueError, json.JSONDecodeError) as e:
        where = "is not a local directory, and the model hub could not provide it" if not Path(config.path).exists() \
            else "has an unreadable config.json"
        raise CodecError(f"codec.path={config.path} {where} ({type(e).__name__}); on a machine without internet "
                         "pass a local directory written by save_pretrained") from None
    name = ae_config.get("_class_name", "")
    if name not in PER_FRAME_AUTOENCODERS:
        raise CodecError(f"codec.path={config.path} holds a {name or 'model without _class_name'}: only per-frame "
                         f"autoencoders ({', '.join(PER_FRAME_AUTOENCODERS)}) are supported; video autoencoders "
                         "with temporal compression (AutoencoderKLWan, ...) would need chunks aligned to their "
                         "temporal groups, which ca2vdm does not implement")
    return name, ae_config


def _looks_local(path: str) -> bool:
    """A path no model hub id can be (hub ids are ``name`` or ``org/name``)."""
    return Path(path).is_absolute() or path.startswith((".", "~")) or path.count("/") > 1 or "\\" in path


def build_codec(config: CodecConfig | dict | None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> Codec:
    """The codec a config (or a checkpoint's recorded codec metadata) describes, on ``device``."""
    if config is None:
        return PixelCodec()
    if isinstance(config, dict):
        fields = CodecConfig.__dataclass_fields__
        config = CodecConfig(**{k: v for k, v in config.items() if k in fields})
    if config.kind not in CODEC_KINDS:
        raise CodecError(f"codec.kind={config.kind!r} must be one of {', '.join(CODEC_KINDS)}")
    if config.kind == "pixel":
        return PixelCodec()
    import diffusers

    name, _ = autoencoder_config(config)
    try:
        autoencoder = getattr(diffusers, name).from_pretrained(config.path, subfolder=config.subfolder,
                                                               torch_dtype=dtype)
    except (OSError, EnvironmentError, ValueError) as e:
        raise CodecError(f"codec.path={config.path}: the {name} weights cannot be loaded "
                         f"({' '.join(str(e).split())[:200]}); the directory must hold what save_pretrained "
                         "wrote") from None
    return DiffusersCodec(autoencoder.to(device), config)


def check_model_fits(codec: Codec, in_channels: int) -> None:
    """A model's channels must be the codec's; raise CodecError naming both and the fix."""
    if in_channels != codec.channels:
        raise CodecError(f"model.in_channels={in_channels} but the codec ({codec.metadata()['kind']}) produces "
                         f"{codec.channels} channels; set model.in_channels={codec.channels}")
