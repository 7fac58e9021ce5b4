"""Our own small per-frame autoencoder: a diffusers architecture (``AutoencoderKL`` or ``AutoencoderTiny``) trained
here, because no pretrained autoencoder can be downloaded on these machines.

Trained by ``train/train_autoencoder.py`` (the loop, checkpoints and resume of :mod:`ca2vdm.training`) on frames of
a video folder with an L1 + MSE reconstruction loss (plus a small KL term for ``AutoencoderKL``). At export the
latents of training frames are measured and the autoencoder config gets ``scaling_factor = 1 / std`` and
``shift_factor = mean``, so the diffusion model sees unit-variance latents, as with the SD VAE's 0.18215.
"""
from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from ca2vdm.checkpoints import weights as ckpt
from ca2vdm.config import AutoencoderConfig, CodecConfig, validate_section
from ca2vdm.data.clips import VideoFolderDataset
from ca2vdm.encoders.codec import DiffusersCodec
from ca2vdm.errors import CheckpointError
from ca2vdm.evaluation.metrics import psnr
from ca2vdm.training.export import check_training_weights

EXPORT_DIR = "autoencoder"  # the save_pretrained directory inside a run: codec.path for codec.kind=autoencoder


def build_autoencoder(cfg: AutoencoderConfig) -> torch.nn.Module:
    """A fresh diffusers autoencoder of the configured architecture and size."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    validate_section(cfg, "autoencoder")  # also when built in code
    channels, n = tuple(cfg.block_out_channels), len(cfg.block_out_channels)
    if cfg.architecture == "AutoencoderTiny":
        return AutoencoderTiny(encoder_block_out_channels=channels, decoder_block_out_channels=channels,
                               num_encoder_blocks=(cfg.layers_per_block,) * n,
                               num_decoder_blocks=(cfg.layers_per_block,) * n, latent_channels=cfg.latent_channels)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=channels, layers_per_block=cfg.layers_per_block,
                         latent_channels=cfg.latent_channels, norm_num_groups=math.gcd(32, *channels),
                         sample_size=cfg.resolution)


def reconstruction_loss(autoencoder: torch.nn.Module, video: torch.Tensor, kl_weight: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """L1 + MSE between a clip's frames and their reconstruction (+ ``kl_weight`` * KL for a KL autoencoder).

    video: (B, 3, T, H, W) in [-1, 1]; every frame is encoded on its own.
    """
    frames = rearrange(video, "b c t h w -> (b t) c h w")
    encoded = autoencoder.encode(frames)
    if hasattr(encoded, "latent_dist"):  # AutoencoderKL: reparameterised sample of the posterior
        posterior = encoded.latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator,
                                                         device=frames.device, dtype=posterior.mean.dtype)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
    else:
        z, kl = encoded.latents, frames.new_zeros(())
    recon = autoencoder.decode(z).sample
    return F.l1_loss(recon.float(), frames.float()) + F.mse_loss(recon.float(), frames.float()) + kl_weight * kl


@torch.no_grad()
def latent_statistics(autoencoder: torch.nn.Module, clips: list[torch.Tensor]) -> tuple[float, float]:
    """(mean, std) of the unscaled latents of ``clips`` ((B, 3, T, H, W) each): the codec's shift and 1/scale."""
    codec = DiffusersCodec(autoencoder, CodecConfig(kind="autoencoder", scaling_factor=1.0, shift_factor=0.0))
    latents = torch.cat([codec.encode(clip).flatten() for clip in clips])
    return latents.mean().item(), latents.std().clamp_min(1e-6).item()


def export_autoencoder(autoencoder: torch.nn.Module, directory: str | Path, shift: float, std: float) -> Path:
    """save_pretrained into ``directory`` with the measured latent ``scaling_factor`` and ``shift_factor``."""
    autoencoder.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    autoencoder.save_pretrained(str(directory))
    drop_unused_config_keys(Path(directory) / "config.json", type(autoencoder))
    return Path(directory)


def drop_unused_config_keys(path: Path, model_class: type) -> None:
    """Rewrite a save_pretrained ``config.json`` without the keys ``model_class`` does not take (AutoencoderTiny
    records ``block_out_channels``, which diffusers then warns about on every load)."""
    accepted = inspect.signature(model_class.__init__).parameters
    config = json.loads(path.read_text())
    kept = {k: v for k, v in config.items() if k.startswith("_") or k in accepted}
    if kept != config:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


class AutoencoderTask:
    """What ``train/train_autoencoder.py`` trains with the loop of :func:`ca2vdm.training.train`: our autoencoder on
    clips of ``data.root`` (held-out videos excluded). Each checkpoint publishes the EMA weights twice: as
    ``ema.safetensors`` (resume checks) and as a diffusers ``autoencoder/`` folder with the measured latent scale,
    which ``codec.kind=autoencoder codec.path=...`` loads."""

    STAT_CLIPS = 16  # training clips whose latents set the scale at export

    def __init__(self, config, device: torch.device):
        self.train_data = None

    def check_resume(self, path: Path, config) -> None:
        check_training_weights(path, "autoencoder_config")
        recorded = ckpt.read_metadata(path).get("autoencoder_config")
        if recorded != asdict(config.autoencoder):
            raise CheckpointError(f"checkpoint {path} was trained with autoencoder config {recorded}, not "
                                       f"{asdict(config.autoencoder)}; use the config it was trained with")

    def dataset(self, config, holdout: bool = False) -> VideoFolderDataset:
        ae, dc = config.autoencoder, config.data
        data = VideoFolderDataset(dc.root, num_frames=ae.frames_per_clip, frame_stride=dc.frame_stride,
                                  resolution=ae.resolution, seed=config.train.seed, clips_per_video=dc.clips_per_video,
                                  report_skipped=False, holdout_every=ae.holdout_every, holdout=holdout)
        if not holdout:
            self.train_data = data  # its first clips set the latent scale at export
        return data

    def build_model(self, config, resume: str | None) -> torch.nn.Module:
        return build_autoencoder(config.autoencoder)

    def loss(self, model, batch: dict, config, gen: torch.Generator) -> torch.Tensor:
        return reconstruction_loss(model, batch["video"].to(gen.device), config.autoencoder.kl_weight, gen)

    def save_weights(self, directory: Path, ema, config, step: int) -> None:
        ckpt.save_tensors(directory / ckpt.WEIGHTS_NAME, ema.shadow,
                          {"autoencoder_config": asdict(config.autoencoder), "train_config": asdict(config.train),
                           "step": step})
        autoencoder = self.ema_model(ema, config)
        clips = [self.train_data[i]["video"][None] for i in range(min(self.STAT_CLIPS, len(self.train_data)))]
        export_autoencoder(autoencoder, directory / EXPORT_DIR, *latent_statistics(autoencoder, clips))

    def sample(self, ema, config, out: Path, step: int) -> None:
        """Held-out reconstruction PSNR of the EMA weights, appended to ``out/heldout_psnr.jsonl``."""
        codec = DiffusersCodec(self.ema_model(ema, config), CodecConfig(kind="autoencoder"))
        value = heldout_psnr(codec, self.dataset(config, holdout=True))
        with open(out / "heldout_psnr.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "psnr": value}) + "\n")

    @staticmethod
    def ema_model(ema, config) -> torch.nn.Module:
        autoencoder = build_autoencoder(config.autoencoder)
        autoencoder.load_state_dict({k: v.cpu() for k, v in ema.shadow.items()})
        return autoencoder.eval()


@torch.no_grad()
def heldout_psnr(codec, dataset: VideoFolderDataset) -> float:
    """PSNR (dB) of decode(encode(clip)) over every clip of ``dataset`` (one MSE over all of them)."""
    clips = torch.stack([dataset[i]["video"] for i in range(len(dataset))])  # (N, 3, T, H, W)
    recon = torch.cat([codec.decode(codec.encode(part)) for part in clips.split(4)])
    return psnr(clips, recon)
