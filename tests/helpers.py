"""Shared test fixtures: tiny models with non-trivial weights."""
import torch

from ca2vdm.config import model_config
from ca2vdm.model import CausalVideoDiT


def random_model(seed: int = 0, **overrides) -> CausalVideoDiT:
    """A tiny model whose zero-initialised (adaLN-Zero) layers are perturbed, so every path carries signal."""
    torch.manual_seed(seed)
    model = CausalVideoDiT(model_config("tiny", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def save_tiny_autoencoder(directory, architecture: str = "AutoencoderKL", seed: int = 0):
    """A tiny diffusers autoencoder (4 latent channels, down-sampling 2) written with save_pretrained."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    torch.manual_seed(seed)
    if architecture == "AutoencoderTiny":
        ae = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                             num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4)
    else:
        ae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                           block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                           sample_size=32, scaling_factor=0.5, shift_factor=0.1)
    ae.save_pretrained(str(directory))
    return ae.eval()
