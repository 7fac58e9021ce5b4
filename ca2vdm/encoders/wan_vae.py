"""Wan's video autoencoder (diffusers' ``AutoencoderKLWan``) as a codec, decoded chunk by chunk.

The VAE compresses 8x in space and 4x in time: latent frame 0 holds the video's first frame alone and every later
latent frame a group of 4 (``TemporalCompression(4)``), 16 channels. Its convolutions are causal in time and keep
the last input frames of every convolution in a feature cache (``CACHE_T`` = 2 frames per site), so a video can be
decoded one latent frame at a time: a chunk of 3 latent frames gives 12 pixel frames (the very first latent frame 1).
:class:`WanStream` holds that cache for one video, in lists of its own (never the VAE's ``_feat_map``, which its
``decode`` and ``encode`` clear), and carries it from chunk to chunk: memory stays flat in the number of chunks and
each chunk is written as soon as it is decoded, the same pixels as decoding the whole latent video at once.

Latents are normalised with the VAE config's ``latents_mean`` and ``latents_std`` as diffusers' ``WanPipeline``
does (decode: ``z / (1 / std) + mean``; encode: ``(mu - mean) * (1 / std)``, ``mu`` the posterior mean).
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from ca2vdm.config.layout import TemporalCompression
from ca2vdm.config.training import CodecConfig
from ca2vdm.errors import CodecError


class WanCodec:
    """``AutoencoderKLWan`` (Wan 2.1's VAE), frozen: pixels <-> normalised latents, whole videos or streamed."""
    pixel_space = False

    def __init__(self, vae: torch.nn.Module, config: CodecConfig):
        cfg = vae.config
        if config.scaling_factor is not None or config.shift_factor is not None:
            raise CodecError("codec.scaling_factor and codec.shift_factor do not apply to AutoencoderKLWan (its "
                             "latents are normalised per channel with its config's latents_mean and latents_std); "
                             "leave them unset")
        if cfg.patch_size is not None:
            raise CodecError(f"codec.path={config.path}: an AutoencoderKLWan with patch_size={cfg.patch_size} (Wan "
                             "2.2's VAE) is not supported; use Wan 2.1's VAE (patch_size null)")
        self.vae, self.config = vae.eval().requires_grad_(False), config
        self.channels, self.factor = cfg.z_dim, cfg.scale_factor_spatial
        self.temporal = TemporalCompression(cfg.scale_factor_temporal)
        self.mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)  # (1, C, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)

    def stream(self) -> WanStream:
        return WanStream(self)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) pixels in [-1, 1], T = 1 + 4k -> (B, 16, 1 + k, H / 8, W / 8), as ``vae.encode``: frame 0
        alone, then groups of 4 through the encoder's feature cache."""
        frames, group = video.shape[2], self.temporal.frames_per_latent
        if (frames - 1) % group:
            raise CodecError(f"a video of {frames} frames cannot be encoded by AutoencoderKLWan: it encodes the "
                             f"first frame alone, then groups of {group}; give 1 + {group}k frames (e.g. "
                             f"{self.temporal.start_of(self.temporal.latents_in(frames))})")
        vae, x = self.vae, video.to(self.dtype)
        feat = [None] * vae._cached_conv_counts["encoder"]
        parts = [vae.encoder(part, feat_cache=feat, feat_idx=[0])  # (B, 2C, 1, h, w) each
                 for part in x.split([1] + [group] * ((frames - 1) // group), dim=2)]
        mu = vae.quant_conv(torch.cat(parts, dim=2))[:, :self.channels]  # the posterior's mean
        mean, std = self.stats(mu)
        return ((mu - mean) * (1.0 / std)).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """A whole video's (B, 16, t, h, w) latents -> its (B, 3, 1 + 4(t - 1), H, W) pixels in [-1, 1]."""
        return self.stream().decode(latents)

    def metadata(self) -> dict:
        return {**asdict(self.config), "class": type(self.vae).__name__, "channels": self.channels,
                "factor": self.factor, "frames_per_latent": self.temporal.frames_per_latent}

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The latents' per-channel mean and std on ``like``'s device and dtype."""
        return self.mean.to(like.device, like.dtype), self.std.to(like.device, like.dtype)


class WanStream:
    """One video through the decoder, a latent frame per call, the feature cache carried from chunk to chunk."""

    def __init__(self, codec: WanCodec):
        self.codec = codec
        self.feat: list[torch.Tensor | None] = [None] * codec.vae._cached_conv_counts["decoder"]
        self.first = True  # the next latent frame is the video's first (it decodes to one pixel frame)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The video's next (B, 16, t, h, w) latents -> (B, 3, T, H, W) pixels in [-1, 1]; T = 4t (1 + 4(t - 1)
        for the video's first latents)."""
        vae = self.codec.vae
        z = latents.to(self.codec.dtype)
        mean, std = self.codec.stats(z)
        x = vae.post_quant_conv(z / (1.0 / std) + mean)  # 1x1x1: frame by frame
        out = []
        for frame in x.split(1, dim=2):  # (B, C, 1, h, w) each
            out.append(vae.decoder(frame, feat_cache=self.feat, feat_idx=[0], first_chunk=self.first))
            self.first = False
        return torch.cat(out, dim=2).float().clamp(-1.0, 1.0)

    def skip(self, latents: torch.Tensor) -> None:
        """Decode given frames for the cache they leave; their pixels are not wanted."""
        self.decode(latents)

    def nbytes(self) -> int:
        """Bytes held by the feature cache (flat in the number of chunks decoded)."""
        return sum(f.numel() * f.element_size() for f in self.feat if isinstance(f, torch.Tensor))
