import json

import pytest
import torch

from ca2vdm.config import CodecConfig
from ca2vdm.encoders.codec import PixelCodec, build_codec, check_model_fits
from ca2vdm.errors import CodecError

from helpers import save_tiny_autoencoder


@pytest.mark.parametrize("architecture", ["AutoencoderKL", "AutoencoderTiny"])
def test_diffusers_codec_encodes_each_frame_with_the_config_factors(tmp_path, architecture):
    ae = save_tiny_autoencoder(tmp_path, architecture)
    codec = build_codec(CodecConfig(kind="diffusers", path=str(tmp_path)))
    assert (codec.channels, codec.factor) == (4, 2)
    video = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (2, 4, 3, 8, 8)
    frame = video[1, :, 2][None]  # frames are encoded independently: one frame alone gives the same latent
    out = ae.encode(frame)
    raw = out.latent_dist.mode() if architecture == "AutoencoderKL" else out.latents
    scale, shift = ae.config.scaling_factor, ae.config.shift_factor or 0.0
    torch.testing.assert_close(latents[1, :, 2], ((raw - shift) * scale)[0], atol=1e-5, rtol=1e-5)
    pixels = codec.decode(latents)
    assert pixels.shape == video.shape and pixels.abs().max() <= 1
    torch.testing.assert_close(pixels[1, :, 2], ae.decode(raw).sample[0].clamp(-1, 1), atol=1e-5, rtol=1e-5)
    assert codec.metadata()["class"] == architecture and codec.metadata()["factor"] == 2


def test_config_overrides_the_autoencoder_scaling(tmp_path):
    save_tiny_autoencoder(tmp_path)
    default = build_codec(CodecConfig(kind="diffusers", path=str(tmp_path)))
    scaled = build_codec(CodecConfig(kind="diffusers", path=str(tmp_path), scaling_factor=1.0, shift_factor=0.0))
    video = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    torch.testing.assert_close(default.encode(video), (scaled.encode(video) - 0.1) * 0.5)


def test_pixel_codec_is_the_identity():
    codec = build_codec(None)
    video = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    assert isinstance(codec, PixelCodec) and torch.equal(codec.encode(video), video)
    assert codec.metadata() == {"kind": "pixel"}


def test_missing_or_wrong_autoencoders_give_one_clear_error(tmp_path):
    with pytest.raises(CodecError, match="needs codec.path"):
        build_codec(CodecConfig(kind="diffusers"))
    with pytest.raises(CodecError, match="no autoencoder config.json"):
        build_codec(CodecConfig(kind="diffusers", path=str(tmp_path)))
    with pytest.raises(CodecError, match="not a local directory"):
        build_codec(CodecConfig(kind="diffusers", path=str(tmp_path / "missing")))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLCogVideoX"}))
    with pytest.raises(CodecError, match="holds a AutoencoderKLCogVideoX: the supported autoencoders are "
                                         "AutoencoderKL, AutoencoderTiny, AutoencoderKLWan"):
        build_codec(CodecConfig(kind="diffusers", path=str(tmp_path)))
    with pytest.raises(CodecError, match="kind"):
        build_codec(CodecConfig(kind="vqgan", path=str(tmp_path)))


def test_weights_missing_beside_a_valid_config(tmp_path):
    save_tiny_autoencoder(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(CodecError, match="weights cannot be loaded"):
        build_codec(CodecConfig(kind="diffusers", path=str(tmp_path)))


def test_model_channels_must_match_the_codec(tmp_path):
    save_tiny_autoencoder(tmp_path)
    codec = build_codec(CodecConfig(kind="diffusers", path=str(tmp_path)))
    check_model_fits(codec, 4)
    with pytest.raises(CodecError, match="model.in_channels=3 .* 4 channels; set model.in_channels=4"):
        check_model_fits(codec, 3)


@pytest.mark.parametrize("command, folder, message", [
    (["train/train.py"], "missing", "is not a local directory (it does not exist)"),
    (["-m", "ca2vdm.cli.main", "encode-latents"], "step_000010", "it has autoencoder/ inside: point codec.path there")],
    ids=["train-missing-path", "encode-autoencoder-one-level-down"])
def test_missing_or_wrong_codec_path_is_one_line_at_the_command_line(tmp_path, command, folder, message):
    """A codec.path that does not exist, or a folder that is not an autoencoder (with the autoencoder one level
    down, as in a train_autoencoder checkpoint), is one ``error:`` line from the entry points, not a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    from helpers import checkout_env

    root = Path(__file__).resolve().parents[1]
    save_tiny_autoencoder(tmp_path / "step_000010" / "autoencoder")
    extra = ["--out", str(tmp_path / "latents")] if "encode-latents" in command else []
    result = subprocess.run([sys.executable, *command, "--config", str(root / "configs/latent-demo.yaml"),
                             *extra, f"codec.path={tmp_path / folder}", f"data.root={tmp_path}",
                             f"train.output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120,
                            cwd=root, env=checkout_env())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: codec.path={tmp_path / folder}") and message in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "latents").exists()
