"""Wan's VAE as a codec (ca2vdm/encoders/wan_vae.py), on a tiny random AutoencoderKLWan in a folder laid out as a
Wan diffusers folder (vae/): chunk-by-chunk decoding through the carried feature cache equals decoding the whole
latent video, encoding equals diffusers' own, the cache stays flat, and the API, the command line's given video and
the codec interface's temporal compression follow one rule."""
import av
import numpy as np
import pytest
import torch

import ca2vdm
from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.config import CodecConfig, SamplerSettings
from ca2vdm.encoders.codec import build_codec
from ca2vdm.errors import CodecError, ConfigError, SettingError
from ca2vdm.generation.video_files import GenerationOptions, generate_video
from ca2vdm.io.video import read_video

from helpers import random_model


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """(folder, vae): a tiny AutoencoderKLWan (16 channels, 8x space, 4x time) saved as FOLDER/vae."""
    from diffusers import AutoencoderKLWan

    folder = tmp_path_factory.mktemp("wan")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True],
                           latents_mean=torch.linspace(-0.5, 0.5, 16).tolist(),
                           latents_std=torch.linspace(0.5, 2.0, 16).tolist())
    vae.save_pretrained(folder / "vae")
    return folder, vae.eval()


@pytest.fixture(scope="module")
def codec(wan):
    return build_codec(CodecConfig(kind="diffusers", path=str(wan[0]), subfolder="vae"))


def _stats(vae):
    return (torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1),
            torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1))


def test_codec_declares_wan_compression(codec, wan):
    assert (codec.channels, codec.factor, codec.temporal.frames_per_latent) == (16, 8, 4)
    meta = codec.metadata()
    assert (meta["class"], meta["frames_per_latent"], meta["subfolder"]) == ("AutoencoderKLWan", 4, "vae")
    with pytest.raises(CodecError, match="scaling_factor and codec.shift_factor do not apply"):
        build_codec(CodecConfig(kind="diffusers", path=str(wan[0]), subfolder="vae", scaling_factor=0.5))


def test_streamed_decoding_equals_the_whole_video(codec, wan):
    """Chunks of 3 latent frames decode to 9, 12, 12 pixel frames; together they are diffusers' whole decode."""
    vae = wan[1]
    mean, std = _stats(vae)
    latents = torch.randn(2, 16, 9, 4, 4)
    with torch.no_grad():
        whole = vae.decode(latents * std + mean).sample  # (2, 3, 33, 32, 32)
    stream = codec.stream()
    parts = [stream.decode(chunk) for chunk in latents.split(3, dim=2)]
    assert [p.shape[2] for p in parts] == [9, 12, 12] and whole.shape[2] == 33
    assert (torch.cat(parts, dim=2) - whole).abs().max() <= 1e-4
    uneven = codec.stream()  # any chunking: one latent frame, then 5, then 3
    pieces = torch.cat([uneven.decode(c) for c in latents.split([1, 5, 3], dim=2)], dim=2)
    assert (pieces - whole).abs().max() <= 1e-4 and (codec.decode(latents) - whole).abs().max() <= 1e-4


def test_encoding_a_first_frame_and_a_video_as_diffusers_does(codec, wan):
    vae = wan[1]
    mean, std = _stats(vae)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = (vae.encode(video).latent_dist.mode() - mean) / std
        first = (vae.encode(video[:, :, :1]).latent_dist.mode() - mean) / std
    assert codec.encode(video[:, :, :1]).shape == (1, 16, 1, 4, 4)
    assert (codec.encode(video[:, :, :1]) - first).abs().max() <= 1e-4
    assert (codec.encode(video) - whole).abs().max() <= 1e-4 and whole.shape[2] == 3
    with pytest.raises(CodecError, match="a video of 7 frames .* give 1 \\+ 4k frames \\(e.g. 5\\)"):
        codec.encode(video[:, :, :7])


def test_feature_cache_is_flat_in_the_number_of_chunks(codec):
    """The decoder's carried state after 40 chunks is the same size as after 10 (within 10 %), never growing."""
    def cache_bytes(chunks: int) -> list[int]:
        stream, sizes = codec.stream(), []
        for _ in range(chunks):
            stream.decode(torch.randn(1, 16, 3, 4, 4))
            sizes.append(stream.nbytes())
        return sizes

    ten, forty = cache_bytes(10), cache_bytes(40)
    assert ten[-1] > 0 and abs(forty[-1] - ten[-1]) <= 0.1 * ten[-1] and max(forty) <= 1.1 * ten[-1]


@pytest.fixture(scope="module")
def checkpoint(wan, codec, tmp_path_factory):
    """A tiny DiT on the Wan VAE's latents (16 x 4 x 4, 32x32 pixels), chunks of 3 latent frames from frame 0."""
    model = random_model(in_channels=16, resolution=4, patch_size=2, chunk_frames=3, first_frame_chunk=False,
                         max_context_frames=6, num_classes=2)
    path = tmp_path_factory.mktemp("wan-ckpt") / "tiny-wan.safetensors"
    meta = CheckpointMetadata(model.cfg, SamplerSettings(steps=2, shift=1.0), codec.metadata())
    save_weights(path, model.state_dict(), model.cfg, meta.entries())
    return path


def test_api_chunks_are_decoded_through_one_stream(checkpoint, codec):
    """3 chunks of 3 latent frames: 9 + 12 + 12 = 33 frames, numbered by pixel frame, equal to decoding the whole
    latent video at once."""
    pipe = ca2vdm.load_pipeline(checkpoint, "cpu")
    assert pipe.size == (32, 32)
    chunks = list(pipe.generate(3, label=1, seed=0))
    assert [c.pixels.shape[1] for c in chunks] == [9, 12, 12] and [c.start_frame for c in chunks] == [0, 9, 21]
    whole = ca2vdm.generation.api.to_pixels(codec, torch.cat([c.latents for c in chunks], dim=2))
    got = np.concatenate([c.pixels for c in chunks], axis=1)
    assert np.abs(got.astype(int) - whole.astype(int)).max() <= 1


def test_given_frames_continue_the_decoder(checkpoint, codec):
    """Given frames are encoded as a video (1 + 4k frames) and decoded only for the cache they leave."""
    pipe = ca2vdm.load_pipeline(checkpoint, "cpu")
    first = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    chunks = list(pipe.generate(2, label=0, seed=1, first_frames=first))
    assert [c.pixels.shape[1] for c in chunks] == [12, 12] and [c.start_frame for c in chunks] == [5, 17]
    latents = torch.cat([pipe.encode(first)] + [c.latents for c in chunks], dim=2)
    whole = ca2vdm.generation.api.to_pixels(codec, latents)[:, 5:]
    assert np.abs(np.concatenate([c.pixels for c in chunks], axis=1).astype(int) - whole.astype(int)).max() <= 1
    with pytest.raises(SettingError, match="holds 4 frames, but the codec encodes the first frame alone, then groups "
                                           "of 4: give 1 \\+ 4k frames \\(e.g. the first 1\\)"):
        next(iter(pipe.generate(1, label=0, first_frames=first[:4])))
    with pytest.raises(SettingError, match="frames_before=4: must be 0 with a codec that compresses time"):
        pipe.generate(1, label=0, first_frames=first, frames_before=4)


def test_a_given_video_uses_whole_groups_of_frames(checkpoint, tmp_path):
    """A 7-frame video: frames 0 .. 4 are written and conditioned on, the last 2 left out with one warning."""
    given = tmp_path / "given.mp4"
    with av.open(str(given), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        for i in range(7):
            frame = np.full((32, 32, 3), 30 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with pytest.warns(UserWarning, match="its last 2 frame\\(s\\) are left out: the codec encodes the first frame "
                                         "alone, then groups of 4"):
        stats = generate_video(checkpoint, tmp_path / "out.mp4",
                               GenerationOptions(chunks=2, label=1, first_frame=str(given), device="cpu"))
    assert stats["frames"] == 5 + 24 and read_video(str(tmp_path / "out.mp4")).shape[1] == 29


def test_training_and_latent_shards_refuse_a_codec_that_compresses_time(wan, tmp_path):
    from ca2vdm.config import Config
    from ca2vdm.data.latent_encoding import encode_folder
    from ca2vdm.errors import DataError
    from ca2vdm.training.diffusion_task import DiffusionTask

    config = Config()
    config.codec = CodecConfig(kind="diffusers", path=str(wan[0]), subfolder="vae")
    config.model.in_channels = 16
    with pytest.raises(ConfigError, match="compresses time .* training through it is not supported"):
        DiffusionTask(config, torch.device("cpu"))
    with pytest.raises(DataError, match="compresses time"):
        encode_folder(tmp_path, tmp_path / "out", build_codec(config.codec), 32)
