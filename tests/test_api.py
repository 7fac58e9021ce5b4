"""ca2vdm.api: load_pipeline loads a checkpoint with its codec and recorded sampler settings, generate yields chunks as
uint8 pixels equal to what infer/long_video.py writes, write_video writes the command line's file, and the docs'
Python API snippet runs. Tiny random model (tests/test_generate.py's checkpoint) and the shipped latent demo."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ca2vdm
from ca2vdm.encoders.codec import DiffusersCodec
from ca2vdm.errors import SettingError
from ca2vdm.generation import api
from ca2vdm.generation.api import load_pipeline, to_pixels, write_video
from ca2vdm.io.video import VideoWriter, read_video, resize_center_crop
from ca2vdm.sampling.pipeline import STATE_DTYPE, LongVideoPipeline

from helpers import CHUNK, cli

ROOT = Path(__file__).resolve().parents[1]
LATENT_DEMO = ROOT / "checkpoints" / "latent-demo.safetensors"
SNIPPET_FILES = [ROOT / "docs" / "api.md", ROOT / "README.md"]  # documents whose "Python API" section must run as shown


def _ramp(size: int = 20, flip: bool = False) -> np.ndarray:
    ramp = np.linspace(30, 220, size, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.full((size, size), 128, np.uint8)), -1)
    return 255 - image if flip else image  # (H, W, 3)


def test_latent_demo_samples_with_its_recorded_settings(tmp_path, cli_writes):
    """The latent demo's recorded shift 3.0 (not the constructor's 1.0) and its autoencoder; keywords override; its
    chunks come out as 128x128 pixels decoded from latents that were not clamped to [-1, 1], the frames the command
    line writes with the same settings."""
    pipe = load_pipeline(LATENT_DEMO, "cpu")
    assert (pipe.settings.shift, pipe.settings.steps, pipe.settings.cfg_scale) == (3.0, 16, 1.5)
    assert isinstance(pipe.codec, DiffusersCodec) and not pipe.sampler.pixel_space and pipe.size == (128, 128)
    tiny = load_pipeline(LATENT_DEMO, "cpu", shift=1.5, steps=2, cfg_scale=1.0)
    assert (tiny.settings.shift, tiny.settings.steps, tiny.settings.cfg_scale) == (1.5, 2, 1.0)
    first, chunk = tiny.generate(1, label=1, seed=0)
    assert (first.index, chunk.index, chunk.start_frame) == (-1, 0, 1)
    assert chunk.pixels.dtype == np.uint8 and chunk.pixels.shape == (1, 4, 128, 128, 3)
    assert chunk.latents.shape == (1, 4, 4, 32, 32) and chunk.latents.abs().max() > 1
    assert np.array_equal(chunk.pixels, to_pixels(tiny.codec, chunk.latents)) and chunk.pixels.std() > 5
    cli.main([str(a) for a in ["--checkpoint", LATENT_DEMO, "--chunks", 1, "--label", 1, "--seed", 0, "--shift", 1.5,
                               "--steps", 2, "--cfg-scale", 1.0, "--out", tmp_path / "cli.mp4"]])
    assert len(cli_writes) == 2 and np.array_equal(cli_writes[1], chunk.pixels[0])
    write_video([first, chunk], tmp_path / "api.mp4")
    assert (tmp_path / "api.mp4").read_bytes() == (tmp_path / "cli.mp4").read_bytes()


def test_chunks_and_file_equal_the_command_lines(checkpoint, tmp_path, cli_writes):
    """Same seed, label and settings: each chunk's pixels are the frames the CLI wrote, write_video hands the same
    writer the same frames in the same writes, and the two files are the same bytes."""
    argv = ["--checkpoint", checkpoint, "--chunks", 3, "--label", 1, "--seed", 7, "--cfg-scale", 2.0, "--steps", 2]
    cli.main([str(a) for a in [*argv, "--out", tmp_path / "cli.mp4"]])
    by_cli = list(cli_writes)
    pipe = load_pipeline(checkpoint, "cpu", cfg_scale=2.0, steps=2)
    chunks = list(pipe.generate(3, label=1, seed=7))
    assert [c.index for c in chunks] == [-1, 0, 1, 2]
    assert [c.start_frame for c in chunks] == [0, 1, 1 + CHUNK, 1 + 2 * CHUNK]
    assert [c.pixels.shape for c in chunks] == [(1, 1, 16, 16, 3)] + [(1, CHUNK, 16, 16, 3)] * 3
    assert all(c.pixels.dtype == np.uint8 and c.model_evals == 2 * 2 and c.seconds > 0 for c in chunks)
    assert len(by_cli) == 4 and all(np.array_equal(c.pixels[0], f) for c, f in zip(chunks, by_cli))
    cli_writes.clear()
    assert write_video(chunks, tmp_path / "api.mp4") == 1 + 3 * CHUNK
    assert len(cli_writes) == 4 and all(np.array_equal(a, b) for a, b in zip(cli_writes, by_cli))
    assert read_video(tmp_path / "api.mp4").shape == (3, 1 + 3 * CHUNK, 16, 16)  # (3, T, H, W)
    assert (tmp_path / "api.mp4").read_bytes() == (tmp_path / "cli.mp4").read_bytes()


def test_first_frames_continue_as_the_command_line(checkpoint, tmp_path, cli_writes):
    """first_frames continues given frames as --first-frame does (uint8 of any size, or float at the model's size,
    give the same chunks); they are not yielded again, and other frames give another continuation."""
    Image.fromarray(_ramp()).save(tmp_path / "first.png")
    cli.main([str(a) for a in ["--checkpoint", checkpoint, "--chunks", 2, "--seed", 3, "--label", 0,
                               "--first-frame", tmp_path / "first.png", "--out", tmp_path / "cli.mp4"]])
    pipe = load_pipeline(checkpoint, "cpu")
    chunks = list(pipe.generate(2, label=0, seed=3, first_frames=_ramp()[None]))  # (1, 20, 20, 3) uint8
    assert [(c.index, c.start_frame) for c in chunks] == [(0, 1), (1, 1 + CHUNK)]
    assert len(cli_writes) == 3 and all(np.array_equal(c.pixels[0], f) for c, f in zip(chunks, cli_writes[1:]))
    with VideoWriter(tmp_path / "api.mp4", fps=8) as writer:  # the given frame as the CLI wrote it, then the chunks
        for frames in [cli_writes[0]] + [c.pixels[0] for c in chunks]:
            writer.write(frames)
    assert (tmp_path / "api.mp4").read_bytes() == (tmp_path / "cli.mp4").read_bytes()
    as_float = resize_center_crop(_ramp()[None], 16)  # (3, 1, 16, 16) in [-1, 1]
    again = next(pipe.generate(1, label=0, seed=3, first_frames=as_float))
    assert np.array_equal(again.pixels, chunks[0].pixels)
    other = next(pipe.generate(1, label=0, seed=3, first_frames=_ramp(flip=True)[None]))
    assert (other.latents - chunks[0].latents).abs().max() > 1e-2  # (a random model listens to them little)


@pytest.mark.parametrize("frames, problem", [(np.zeros((20, 20), np.uint8), "(T, H, W, 3)"),
                                             (np.zeros((3, 1, 20, 20), np.float32), "float (B, 3, T, 16, 16)")])
def test_first_frames_of_the_wrong_shape(checkpoint, frames, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        next(load_pipeline(checkpoint, "cpu").generate(1, first_frames=frames))


def test_breaking_out_stops_generating(checkpoint, monkeypatch):
    """num_chunks=None has no end; nothing runs before the first chunk is asked for, and no chunk is computed
    after the caller breaks out."""
    computed, original = [], LongVideoPipeline.next_chunk
    monkeypatch.setattr(LongVideoPipeline, "next_chunk",
                        lambda self, state, **kw: computed.append(state.chunks) or original(self, state, **kw))
    chunks = load_pipeline(checkpoint, "cpu").generate(None, seed=0)
    assert computed == []
    for chunk in chunks:
        if chunk.index == 4:
            break
    assert computed == [0, 1, 2, 3, 4, 5]  # the first frame, then chunks 0 to 4
    chunks.close()
    assert next(chunks, None) is None and len(computed) == 6
    with pytest.raises(ValueError, match="num_chunks"):
        load_pipeline(checkpoint, "cpu").generate(0)  # refused at the call, not at the first chunk


def test_write_video_keeps_finished_chunks_and_refuses_an_existing_file(checkpoint, tmp_path):
    pipe = load_pipeline(checkpoint, "cpu", steps=1)

    def interrupted():
        for chunk in pipe.generate(None, seed=0):
            yield chunk
            if chunk.index == 1:
                raise KeyboardInterrupt

    out = tmp_path / "v.mp4"
    with pytest.raises(KeyboardInterrupt):
        write_video(interrupted(), out)
    assert read_video(out).shape == (3, 1 + 2 * CHUNK, 16, 16) and not list(tmp_path.glob(".*"))
    before = out.read_bytes()
    with pytest.raises(SettingError, match="already exists; pass overwrite to replace it"):
        write_video(pipe.generate(1), out)
    assert out.read_bytes() == before
    assert write_video(pipe.generate(1), out, overwrite=True) == 1 + CHUNK


def test_import_stays_light_and_exports_the_api():
    """The API is reached from the package (loaded on first use: the codec stack is not imported by ca2vdm)."""
    assert ca2vdm.load_pipeline is load_pipeline and ca2vdm.write_video is write_video
    assert ca2vdm.VideoWriter is VideoWriter and "load_pipeline" in ca2vdm.__all__
    with pytest.raises(AttributeError, match="no_such_name"):
        ca2vdm.no_such_name


def python_blocks(markdown: str, heading: str) -> list[str]:
    """The fenced ```python blocks of the section under the first heading that names ``heading``."""
    lines = markdown.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(rf"#+\s.*{re.escape(heading)}", line)]
    assert starts, f"no heading with {heading!r}"
    level = len(lines[starts[0]]) - len(lines[starts[0]].lstrip("#"))
    section, fenced = [], False
    for line in lines[starts[0] + 1:]:
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}}\s", line):  # the next heading at this level or above
            break
        section.append(line)
    return re.findall(r"^```python\n(.*?)^```", "\n".join(section) + "\n", flags=re.S | re.M)


@pytest.mark.parametrize("doc", SNIPPET_FILES, ids=lambda p: p.name)
def test_python_api_snippet_runs(doc, tmp_path, monkeypatch):
    """The snippet runs as shown (in a folder beside the shipped checkpoints, 2 denoising steps to be quick), writes
    only under the git-ignored outputs/ (it wrote chunk0.png .. square.mp4 into the checkout's root), and the videos
    it writes hold frames of the latent demo's size."""
    code = "\n".join(python_blocks(doc.read_text(), "Python API"))
    assert "ca2vdm.load_pipeline" in code
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    monkeypatch.chdir(tmp_path)
    original = api.load_pipeline
    monkeypatch.setattr(api, "load_pipeline", lambda *args, **kw: original(*args, **{"steps": 2, **kw}))
    exec(compile(code, str(doc), "exec"), {"__name__": "snippet"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "outputs"]
    assert "/outputs/" in (ROOT / ".gitignore").read_text().split()
    videos = sorted((tmp_path / "outputs").glob("*.mp4"))
    assert videos
    for path in videos:
        video = read_video(path)
        assert video.shape[0] == 3 and video.shape[1] >= 4 and video.shape[2:] == (128, 128) and video.std() > 0.02


def test_dtype_and_automatic_device(checkpoint):
    """device None or "auto" is CUDA when present; dtype sets the weights' (and so the chunks') precision."""
    pipe = load_pipeline(checkpoint, "auto", dtype=torch.bfloat16)
    model = pipe.model
    assert model.dtype == torch.bfloat16 and model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    chunk = next(pipe.generate(1, seed=0))
    # the sampler's state (and so the chunk's latents) stays float32 at every weight precision (ca2vdm.precision)
    assert chunk.latents.dtype == STATE_DTYPE == torch.float32
    assert chunk.pixels.dtype == np.uint8 and chunk.pixels.std() > 5
    assert load_pipeline(checkpoint).model.dtype == (
        torch.bfloat16 if torch.cuda.is_available() else torch.float32)
