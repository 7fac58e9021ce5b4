"""Codecs between pixels and the space the diffusion model works in.

The model runs on (B, C, T, H, W) tensors. By default that is pixels in [-1, 1] (:class:`PixelCodec`): no
pretrained autoencoder can be downloaded here. A video VAE plugs in by implementing :class:`Codec`.
"""
from __future__ import annotations

from typing import Protocol

import torch


class Codec(Protocol):
    channels: int   # channels of the encoded tensor (the model's in_channels)
    factor: int     # spatial down-sampling of encode

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) pixels in [-1, 1] -> (B, channels, T, H / factor, W / factor)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`, back to pixels in [-1, 1]."""


class PixelCodec:
    """Identity codec: the model works on pixels."""
    channels = 3
    factor = 1

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)
