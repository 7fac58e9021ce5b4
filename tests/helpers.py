"""Shared test helpers: tiny models with non-trivial weights, the command line run in-process or in a fresh
interpreter."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ca2vdm.cli.generate as cli
from ca2vdm.cli.main import main as ca2vdm_main
from ca2vdm.config import model_config
from ca2vdm.models.dit import CausalVideoDiT

ROOT = Path(__file__).resolve().parents[1]
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


def run_command(*args) -> object:
    """``ca2vdm ARGS`` run in this process: its exit message or code, or 0 when it ran through (torch is imported once
    for the whole test session)."""
    grad = torch.is_grad_enabled()
    try:
        ca2vdm_main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    finally:
        assert torch.is_grad_enabled() == grad, f"ca2vdm {args[0]} changed torch's grad mode for the whole process"
    return 0


# runs a script as __main__; with "nompl" first, matplotlib cannot be imported (as on a machine without it; torchmetrics
# loads first: it imports matplotlib whenever matplotlib's package metadata is installed, which it is here)
_RUN = ("import runpy, sys; args = sys.argv[1:]\n"
        "if args[0] == 'nompl': import torchmetrics; sys.modules['matplotlib'] = None; args = args[1:]\n"
        "sys.argv = args; runpy.run_path(args[0], run_name='__main__')")


def run_program(script: str, *args, matplotlib: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` of this checkout (a benchmark or experiment) in a fresh interpreter, as a user runs it,
    without matplotlib if asked."""
    cmd = [sys.executable, "-c", _RUN, *([] if matplotlib else ["nompl"]), str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=checkout_env(), timeout=timeout)


def ca2vdm_command(*args) -> list[str]:
    """The argv of ``ca2vdm ARGS`` in a fresh interpreter (``python -m ca2vdm.cli.main``); run it with
    :func:`checkout_env`."""
    return [sys.executable, "-m", "ca2vdm.cli.main", *map(str, args)]


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh interpreter that imports this checkout's ca2vdm whatever its working folder."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
