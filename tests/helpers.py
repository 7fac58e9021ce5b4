"""Shared test helpers: tiny models with non-trivial weights, the command line run in-process."""
import runpy
import sys
from pathlib import Path

import pytest
import torch

import ca2vdm.cli.generate as cli
from ca2vdm.config import model_config
from ca2vdm.models.dit import CausalVideoDiT

CHUNK = 2  # tiny chunk_frames
STEPS = 3  # the tiny checkpoint's diffusion steps (conftest.checkpoint)


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


def cli_error(capsys, *argv) -> str:
    """Run the generate command line in-process, require a non-zero exit, return its error message."""
    with pytest.raises(SystemExit) as exc:
        cli.main([str(a) for a in argv])
    code = exc.value.code
    assert code not in (0, None)
    return code if isinstance(code, str) else capsys.readouterr().err


def run_script(script: str, *args) -> object:
    """``python scripts/SCRIPT ARGS`` of this checkout run in this process: its exit message or code, or 0 when it ran
    through (torch is imported once for the whole test session)."""
    argv, grad = sys.argv, torch.is_grad_enabled()
    sys.argv = [Path(script).name, *map(str, args)]
    try:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / script), run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = argv
        assert torch.is_grad_enabled() == grad, f"{script} changed torch's grad mode for the whole process"
    return 0
