"""The latent path end to end: a tiny diffusers AutoencoderKL (save_pretrained into a temp dir) as the codec of a
few training steps, then long-video inference from the checkpoint alone."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ca2vdm.cli.generate as generate_cli
from ca2vdm.checkpoints.weights import read_metadata
from ca2vdm.config import load_config
from ca2vdm.data.latent_encoding import encode_folder
from ca2vdm.data.synthetic import write_dataset
from ca2vdm.encoders.codec import build_codec
from ca2vdm.io.video import read_video
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training.checkpoint_dirs import step_dirs
from ca2vdm.training.loop import train

from helpers import ca2vdm_command, checkout_env, random_model, save_tiny_autoencoder

ROOT = Path(__file__).resolve().parents[1]
LATENT = ["model.in_channels=4", "model.resolution=8", "model.patch_size=2", "codec.kind=diffusers"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 training steps of the tiny model on 4 x 8 x 8 latents of 16x16 videos; the checkpoint directory."""
    tmp = tmp_path_factory.mktemp("latent")
    write_dataset(tmp / "videos", num_videos=6, num_frames=12, size=16, seed=0)
    save_tiny_autoencoder(tmp / "ae")
    config = load_config(ROOT / "configs/tiny.yaml", [*LATENT, f"codec.path={tmp / 'ae'}",
                                                      f"data.root={tmp / 'videos'}", f"train.output_dir={tmp / 'run'}",
                                                      "train.max_steps=3", "train.save_every=3", "train.batch_size=2"])
    train(config, progress_bar=False)
    return tmp, config, step_dirs(tmp / "run" / "checkpoints")[-1]


def test_checkpoint_records_its_codec(run):
    tmp, _, checkpoint = run
    codec = read_metadata(checkpoint)["codec"]
    assert codec["kind"] == "diffusers" and codec["path"] == str(tmp / "ae")
    assert (codec["channels"], codec["factor"], codec["scaling_factor"]) == (4, 2, 0.5)


def test_training_from_latents_takes_the_same_clips(run):
    """data.latents trains on the encoded clips of the same videos: the same first loss as decoding them."""
    tmp, config, _ = run
    codec = build_codec(config.codec)
    encode_folder(tmp / "videos", tmp / "latents", codec, pixel_resolution=16, progress=False)
    losses = {}
    for name, extra in (("videos", []), ("latents", [f"data.latents={tmp / 'latents'}"])):
        out = tmp / f"cmp-{name}"
        cfg = load_config(ROOT / "configs/tiny.yaml", [*LATENT, f"codec.path={tmp / 'ae'}",
                                                       f"data.root={tmp / 'videos'}", f"train.output_dir={out}",
                                                       "train.max_steps=1", "train.batch_size=2", *extra])
        train(cfg, progress_bar=False)
        losses[name] = float((out / "metrics.jsonl").read_text().split('"loss": ')[1].split(",")[0])
    assert losses["latents"] == pytest.approx(losses["videos"], rel=1e-2)  # latents stored as float16


def test_cached_equals_recomputed_in_latent_space():
    model = random_model(num_classes=3, in_channels=4, resolution=8, patch_size=2)
    outs = {}
    for mode in ("kv", "full"):
        pipe = LongVideoPipeline(model, steps=3, cfg_scale=2.0, cache=mode)
        outs[mode] = torch.cat([c.frames for c in pipe.generate(4, label=1, seed=0)], dim=2)
    assert outs["kv"].shape == (1, 4, 7, 8, 8)
    assert (outs["kv"] - outs["full"]).abs().max() <= 1e-4 and outs["kv"].abs().max() > 0.05


def _infer(*args):
    return subprocess.run([sys.executable, str(ROOT / "infer/long_video.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_long_video_decodes_to_the_autoencoder_pixel_size(run, tmp_path):
    _, _, checkpoint = run
    result = _infer("--checkpoint", checkpoint, "--chunks", 3, "--label", 1, "--out", tmp_path / "v.mp4")
    assert result.returncode == 0, result.stderr
    video = read_video(tmp_path / "v.mp4")  # (3, T, H, W)
    assert video.shape == (3, 1 + 3 * 2, 16, 16)  # first frame + 3 chunks of 2 frames, 16x16 pixels


def test_first_frame_image_is_encoded(run, tmp_path):
    _, _, checkpoint = run
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = 255
    Image.fromarray(image).save(tmp_path / "first.png")
    result = _infer("--checkpoint", checkpoint, "--chunks", 2, "--first-frame", tmp_path / "first.png",
                    "--out", tmp_path / "v.mp4")
    assert result.returncode == 0, result.stderr
    video = read_video(tmp_path / "v.mp4")
    assert video.shape == (3, 1 + 2 * 2, 16, 16)
    first = video[:, 0]  # the given image, resized to the pixel size: left half white, right half black
    assert first[:, :, :6].mean() > 0.8 and first[:, :, 10:].mean() < -0.8


def test_missing_codec_weights_is_one_clear_error(run, tmp_path):
    tmp, _, checkpoint = run
    moved = tmp / "ae-moved"
    (tmp / "ae").rename(moved)
    try:
        result = _infer("--checkpoint", checkpoint, "--chunks", 1, "--out", tmp_path / "v.mp4")
    finally:
        moved.rename(tmp / "ae")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(tmp / "ae") in result.stderr and "--codec-path" in result.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_exported_latent_model_ships_with_its_autoencoder(run, tmp_path, cli_writes):
    """``ca2vdm export --autoencoder``: the weights and the autoencoder travel together; the pair works
    from another folder with the original autoencoder gone, and gives the training checkpoint's video."""
    tmp, _, checkpoint = run
    shipped = tmp_path / "shipped"
    result = subprocess.run(ca2vdm_command("export", checkpoint, shipped / "latent.safetensors", "--dtype", "fp32",
                                           "--autoencoder", shipped / "ae"), capture_output=True, text=True,
                            env=checkout_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert read_metadata(shipped / "latent.safetensors")["codec"]["path"] == "ae"
    moved = tmp_path / "moved"
    shipped.rename(moved)
    (tmp / "ae").rename(tmp / "ae-gone")
    def frames(checkpoint: Path, out: Path) -> np.ndarray:  # what the command hands to its writer (conftest)
        cli_writes.clear()
        generate_cli.main(["--checkpoint", str(checkpoint), "--chunks", "2", "--out", str(out)])
        assert out.exists()
        return np.concatenate(cli_writes)

    try:
        got = frames(moved / "latent.safetensors", tmp_path / "a.mp4")
    finally:
        (tmp / "ae-gone").rename(tmp / "ae")
    assert np.array_equal(got, frames(checkpoint, tmp_path / "b.mp4"))
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_shipped_latent_demo_generates_128_pixel_frames(tmp_path):
    """checkpoints/latent-demo.safetensors finds its autoencoder beside it (checkpoints/ae-shapes128) from a clone:
    two chunks of a square decode to 128x128 frames with a bright shape on the dark background."""
    shipped = ROOT / "checkpoints/latent-demo.safetensors"
    meta = read_metadata(shipped)
    assert meta["codec"]["path"] == "ae-shapes128"
    sampler = ("steps", "shift", "cond_noise", "cfg_scale")  # what generation reads: the config documents the file
    config = load_config(ROOT / "configs/latent-demo.yaml").diffusion
    assert {k: meta["diffusion_config"][k] for k in sampler} == {k: getattr(config, k) for k in sampler}
    result = _infer("--checkpoint", shipped, "--chunks", 2, "--label", 1, "--out", tmp_path / "v.mp4")
    assert result.returncode == 0, result.stderr
    video = read_video(tmp_path / "v.mp4")  # (3, T, H, W) in [-1, 1]
    assert video.shape == (3, 1 + 2 * 4, 128, 128)  # the first frame, then two chunks of 4
    brightest = video.amax(dim=0)[1:]  # (T, H, W) generated frames
    assert (brightest > 0).float().mean() > 0.02 and brightest.median() < -0.5
