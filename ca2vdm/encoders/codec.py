"""Codecs between pixels and the space the diffusion model works in.

The model runs on (B, C, T, H, W) tensors in the codec's space. Every place where a video crosses into or out of
the model (training data, sample videos, ``infer/long_video.py``, benchmarks) goes through a :class:`Codec`:

* ``pixel``: identity, pixels in [-1, 1] (the shipped 32x32 demo model);
* ``diffusers``: any per-frame diffusers autoencoder loaded with ``from_pretrained`` (``AutoencoderKL`` as in
  Ca2-VDM, ``AutoencoderTiny``), latents ``(z - shift_factor) * scaling_factor`` with the factors of its config;
  or Wan's video autoencoder (``AutoencoderKLWan``, :mod:`ca2vdm.encoders.wan_vae`), which compresses time too;
* ``autoencoder``: our own small autoencoder (a diffusers architecture trained by ``train/train_autoencoder.py``,
  which stores the measured latent scale in its config); loaded the same way.

A codec declares how its frames map to pixel frames (``temporal``, a
:class:`~ca2vdm.config.layout.TemporalCompression`: 1 pixel frame per frame for the per-frame codecs, whose frames
are encoded independently, so chunks need no alignment with them). ``encode`` and ``decode`` take a whole video from
its first frame; a video decoded chunk by chunk goes through one :meth:`Codec.stream`, which carries what a causal
video codec needs from chunk to chunk (per-frame codecs carry nothing). The latent of a frame is the mean of the
posterior (deterministic), as is usual for cached latent datasets.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from einops import rearrange

from ca2vdm.config.layout import TemporalCompression
from ca2vdm.config.training import CODEC_KINDS, CodecConfig
from ca2vdm.encoders.wan_vae import WanCodec
from ca2vdm.errors import CodecError

PER_FRAME_AUTOENCODERS = ("AutoencoderKL", "AutoencoderTiny")
VIDEO_AUTOENCODERS = ("AutoencoderKLWan",)  # compress time as well (ca2vdm.encoders.wan_vae)
FRAMES_PER_CALL = 16  # frames encoded or decoded per autoencoder call: bounds activation memory


class CodecStream(Protocol):
    """One video decoded chunk by chunk: each call continues where the previous one stopped."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The video's next (B, channels, t, h, w) frames -> their (B, 3, T, H, W) pixels in [-1, 1], T =
        ``temporal.pixel_frames`` of them."""

    def skip(self, latents: torch.Tensor) -> None:
        """The video's next frames whose pixels are known already (given frames, written as they were): only what
        they leave for the frames after them is kept."""


class Codec(Protocol):
    channels: int       # channels of the encoded tensor (the model's in_channels)
    factor: int         # spatial down-sampling of encode
    temporal: TemporalCompression  # pixel frames per frame of the codec's space (1 for per-frame codecs)
    pixel_space: bool   # the model works on pixels in [-1, 1] (generated chunks are clamped), not on latents

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) pixels in [-1, 1], a whole video from its first frame -> (B, channels,
        temporal.latents_in(T), H / factor, W / factor)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode` for a whole video from its first frame, back to pixels in [-1, 1]."""

    def stream(self) -> CodecStream:
        """A new video to decode chunk by chunk."""

    def metadata(self) -> dict:
        """What a checkpoint records to rebuild this codec."""


class FrameStream:
    """The stream of a per-frame codec: every frame decodes alone, so nothing is carried between chunks."""

    def __init__(self, codec: Codec):
        self.codec = codec

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(latents)

    def skip(self, latents: torch.Tensor) -> None:
        """Nothing to keep."""


class PixelCodec:
    """Identity codec: the model works on pixels."""
    channels = 3
    factor = 1
    temporal = TemporalCompression()
    pixel_space = True

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def stream(self) -> FrameStream:
        return FrameStream(self)

    def metadata(self) -> dict:
        return {"kind": "pixel"}


class DiffusersCodec:
    """A per-frame diffusers autoencoder, frozen, with its latent scaling."""
    temporal = TemporalCompression()
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

    def stream(self) -> FrameStream:
        return FrameStream(self)

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
    if name not in PER_FRAME_AUTOENCODERS + VIDEO_AUTOENCODERS:
        raise CodecError(f"codec.path={config.path} holds a {name or 'model without _class_name'}: the supported "
                         f"autoencoders are {', '.join(PER_FRAME_AUTOENCODERS + VIDEO_AUTOENCODERS)}")
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
    if name in VIDEO_AUTOENCODERS:
        return WanCodec(autoencoder.to(device), config)
    return DiffusersCodec(autoencoder.to(device), config)


def check_model_fits(codec: Codec, in_channels: int) -> None:
    """A model's channels must be the codec's; raise CodecError naming both and the fix."""
    if in_channels != codec.channels:
        raise CodecError(f"model.in_channels={in_channels} but the codec ({codec.metadata()['kind']}) produces "
                         f"{codec.channels} channels; set model.in_channels={codec.channels}")
