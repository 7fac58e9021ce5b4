"""Generating from a downloaded Wan folder (ca2vdm/generation/wan_base.py, ca2vdm/checkpoints/wan_folder.py): a tiny
random Wan 2.1 diffusers folder made by diffusers' WanPipeline(...).save_pretrained (ca2vdm/checkpoints/tiny_wan.py)
sampled by our pipeline as one chunk equals WanPipeline itself; with a Self-Forcing checkpoint, the command line, the
API and the server write the same 33-frame video with a prompt switch; non-square sizes; the known-model table; and
every bad input is one line before any work."""
import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import ca2vdm
from ca2vdm.checkpoints.tiny_wan import write_self_forcing_pt, write_tiny_wan
from ca2vdm.config import model_config
from ca2vdm.config.presets import PRESETS, preset_for
from ca2vdm.encoders.umt5 import UMT5_XXL
from ca2vdm.errors import SettingError
from ca2vdm.generation.api import Pipeline
from ca2vdm.generation.wan_memory import GIB, check_fits_gpu, estimate
from ca2vdm.io.video import read_video
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.serve import create_app, load_catalog

from helpers import run_command
from serve_helpers import receive

PROMPT, SWITCHED = "a red circle moves left", "a blue square drifting right"


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """(the tiny Wan folder, a Self-Forcing .pt of its transformer with other weights)."""
    root = tmp_path_factory.mktemp("wan")
    folder = write_tiny_wan(root / "Wan2.1-T2V-tiny-Diffusers")
    return folder, write_self_forcing_pt(folder, root / "self_forcing_dmd.pt")


class WanSchedule(LongVideoPipeline):
    """Our sampler at given times (WanPipeline's scheduler's sigmas) instead of ``timesteps(steps, shift)``."""
    times: list[float] = []

    def schedule(self) -> list[float]:
        return self.times


def test_one_chunk_holding_the_whole_clip_is_wans_own_pipeline(wan):
    """9 frames (3 latent frames) as one chunk, guided against the empty prompt, with WanPipeline's noise and
    flow-matching schedule: the same latents and frames as diffusers' WanPipeline run on the folder."""
    from diffusers import WanPipeline

    reference = WanPipeline.from_pretrained(wan[0], local_files_only=True)
    ask = dict(prompt=PROMPT, negative_prompt="", height=32, width=32, num_frames=9, num_inference_steps=3,
               guidance_scale=5.0)
    latents = reference(**ask, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    frames = reference(**ask, generator=torch.Generator().manual_seed(0), output_type="np").frames  # (1, 9, H, W, 3)
    pipe = ca2vdm.load_pipeline(base=wan[0], size=(32, 32), device="cpu", steps=3, cfg_scale=5.0)
    assert pipe.metadata.raw["preset"] == "wan" and pipe.model.cfg.chunk_frames == 3  # the folder's own transformer
    sampler = pipe.sampler
    WanSchedule.times = reference.scheduler.sigmas.tolist()
    same = Pipeline(WanSchedule(sampler.model, sampler.settings, text_encoder=sampler.text_encoder,
                                pixel_space=False), pipe.codec, pipe.metadata)
    [chunk] = list(same.generate(1, prompt=PROMPT, seed=0))
    assert chunk.latents.shape == latents.shape == (1, 16, 3, 4, 4)
    assert (chunk.latents - latents).abs().max() <= 1e-4
    theirs = np.round(frames[0] * 255).astype(int)
    assert chunk.pixels.shape == (1, 9, 32, 32, 3) and np.abs(chunk.pixels[0].astype(int) - theirs).max() <= 1


def _api_video(wan) -> np.ndarray:
    pipe = ca2vdm.load_pipeline(base=wan[0], checkpoint=wan[1], size=(32, 32), device="cpu")
    chunks = list(pipe.generate(3, prompt=PROMPT, switches={2: SWITCHED}, seed=0))
    assert [c.pixels.shape[1] for c in chunks] == [9, 12, 12] and [c.start_frame for c in chunks] == [0, 9, 21]
    return np.concatenate([c.pixels[0] for c in chunks])  # (33, H, W, 3)


def test_command_line_api_and_server_make_the_self_forcing_video(wan, tmp_path):
    """Self-Forcing's settings from the known-model table (4 steps, shift 5, chunks of 3 latent frames, unguided);
    3 chunks = 9 + 12 + 12 = 33 frames, the prompt switched at chunk 2, the same frames through every front end."""
    out, stats = tmp_path / "sf.mp4", tmp_path / "stats.json"
    assert run_command("generate", "--base", wan[0], "--checkpoint", wan[1], "--prompt", PROMPT, "--chunks", "3",
                       "--switch", f"2={SWITCHED}", "--size", "32x32", "--out", out, "--stats", stats) == 0
    recorded = json.loads(stats.read_text())
    assert (recorded["steps"], recorded["shift"], recorded["cfg_scale"], recorded["frames"]) == (4, 5.0, 1.0, 33)
    assert recorded["base"] == str(wan[0]) and recorded["switches"] == {"2": SWITCHED}
    assert read_video(out).shape == (3, 33, 32, 32)
    api = _api_video(wan)
    unswitched = ca2vdm.load_pipeline(base=wan[0], checkpoint=wan[1], size=(32, 32), device="cpu")
    plain = np.concatenate([c.pixels[0] for c in unswitched.generate(3, prompt=PROMPT, seed=0)])
    assert (api[:21] == plain[:21]).all() and (api[21:] != plain[21:]).any()  # the switch changes chunk 2 only

    catalog = load_catalog([str(wan[1])], "cpu", base=wan[0], size=(32, 32))
    assert catalog["self_forcing_dmd"].describe()["size"] == [32, 32]
    frames = []
    with TestClient(create_app(catalog, max_chunks=4)) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_json({"type": "start", "model": "self_forcing_dmd", "prompt": PROMPT, "seed": 0, "chunks": 3})
        ws.send_json({"type": "switch", "prompt": SWITCHED, "at": 2})
        while (message := receive(ws))[0] != "done":
            if message[0] == "chunk":
                frames.append(message[2])
                ws.send_json({"type": "shown", "frames": sum(len(f) for f in frames)})
    assert message[1]["frames"] == 33 and (np.concatenate(frames) == api).all()


def test_non_square_frames_end_to_end(wan, tmp_path):
    pipe = ca2vdm.load_pipeline(base=wan[0], checkpoint=wan[1], size=(32, 48), device="cpu")
    assert pipe.size == (32, 48) and pipe.model.frame_shape == (16, 4, 6)
    first = np.random.default_rng(0).integers(0, 255, (5, 40, 90, 3), dtype=np.uint8)  # centre-cropped to 2:3
    chunks = list(pipe.generate(2, prompt=PROMPT, first_frames=first))
    assert [c.pixels.shape for c in chunks] == [(1, 12, 32, 48, 3)] * 2
    out = tmp_path / "wide.mp4"
    assert run_command("generate", "--base", wan[0], "--checkpoint", wan[1], "--prompt", PROMPT, "--chunks", "1",
                       "--size", "32x48", "--out", out) == 0
    assert read_video(out).shape == (3, 9, 32, 48)


def test_the_known_model_table():
    assert [preset_for(name) for name in ("self_forcing_dmd.pt", "causvid_kd.pt", "longlive_base.pt",
                                          "Causal-Forcing.pt", "other.pt", None)] == [
        "self-forcing", "causvid", "longlive", "self-forcing", "self-forcing", "wan"]
    assert preset_for("base.pt", lora=True) == preset_for(None, lora=True) == "longlive"
    assert PRESETS["causvid"]["sampler"]["steps"] == 3 and PRESETS["self-forcing"]["sampler"]["shift"] == 5.0
    longlive = PRESETS["longlive"]["model"]
    assert (longlive["max_context_frames"] + longlive["chunk_frames"], longlive["sink_frames"]) == (12, 3)


def _broken(wan, tmp_path, change) -> str:
    """A copy of the tiny folder with ``change`` applied to it."""
    folder = tmp_path / "broken"
    shutil.copytree(wan[0], folder)
    change(folder)
    return folder


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("case, message", [
    ("missing", "--base {base}: is not a folder; give a Wan 2.1 text-to-video folder: diffusers'"),
    ("other", "--base {base}: is not a Wan folder \\(found notes.txt\\); give a Wan 2.1"),
    ("no-vae", "--base {base}: has no VAE \\(vae/config.json is missing\\); download the whole folder"),
    ("no-tokenizer", "--base {base}: has no tokenizer \\(tokenizer/tokenizer_config.json is missing\\)"),
    ("wan22-vae", "--base {base}: has Wan 2.2's VAE \\(z_dim 48, patch_size 2\\); only Wan 2.1's VAE"),
    ("i2v", "--base {base}: is a WanImageToVideoPipeline folder; only text-to-video Wan 2.1"),
    ("wan-layout", "--base {base}: has no text encoder \\(models_t5_umt5-xxl-enc-bf16.pth is missing\\)"),
    ("size", "--size 40x32: height and width must be multiples of 16 \\(the codec's 8 x the patch's 2\\), e.g. "
             "32x32"),
    ("checkpoint", "--checkpoint {base}/none.pt: does not exist; give the transformer's weights"),
])
def test_bad_folders_and_settings_are_one_line_before_any_work(case, message, wan, tmp_path):
    base, size = wan[0], "32x32"
    if case == "missing":
        base = tmp_path / "nowhere"
    elif case == "other":
        base = tmp_path / "other"
        base.mkdir()
        (base / "notes.txt").write_text("not a model")
    elif case == "no-vae":
        base = _broken(wan, tmp_path, lambda f: shutil.rmtree(f / "vae"))
    elif case == "no-tokenizer":
        base = _broken(wan, tmp_path, lambda f: shutil.rmtree(f / "tokenizer"))
    elif case == "wan22-vae":
        base = _broken(wan, tmp_path, lambda f: _edit_json(f / "vae/config.json", z_dim=48, patch_size=2))
    elif case == "i2v":
        base = _broken(wan, tmp_path, lambda f: _edit_json(f / "model_index.json",
                                                           _class_name="WanImageToVideoPipeline"))
    elif case == "wan-layout":
        base = tmp_path / "Wan2.1-T2V-1.3B"
        base.mkdir()
        (base / "config.json").write_text(json.dumps(dict(model_type="t2v", dim=24, ffn_dim=32, in_dim=16,
                                                          out_dim=16, num_heads=2, num_layers=2)))
        (base / "Wan2.1_VAE.pth").write_bytes(b"")
    elif case == "size":
        size = "40x32"
    checkpoint = base / "none.pt" if case == "checkpoint" else wan[1]
    out = tmp_path / "out.mp4"
    error = run_command("generate", "--base", base, "--checkpoint", checkpoint, "--prompt", PROMPT, "--size", size,
                        "--out", out)
    assert isinstance(error, str) and "\n" not in error.strip(), error
    assert __import__("re").search(message.format(base=base), error), error
    assert not out.exists()


def test_other_misuses_are_one_line(wan, tmp_path):
    out = tmp_path / "out.mp4"
    assert run_command("generate", "--offload-text-encoder", "--out", out) == (
        "error: --offload-text-encoder True: applies to a Wan folder's UMT5 text encoder: give --base too")
    assert run_command("generate", "--size", "48x48", "--out", out) == (
        "error: --size 48x48: applies to Wan models (model.arch=wan); this model's frames are 32x32")
    assert run_command("generate", "--base", wan[0], "--checkpoint", "checkpoints/demo.safetensors", "--out",
                       out).startswith("error: --checkpoint checkpoints/demo.safetensors: is a dit model; a Wan base")
    inside = wan[0] / "out.mp4"
    assert run_command("generate", "--base", wan[0], "--prompt", PROMPT, "--out", inside) == (
        f"error: --out {inside}: is inside the --base folder {wan[0]}; write it elsewhere")
    assert not out.exists() and not inside.exists()


def test_a_gpu_too_small_is_refused_naming_the_fix():
    """Wan 1.3B at 480x832 with UMT5-XXL: the estimate from the configs (no weights) against a card's free memory."""
    cfg = model_config("wan-1.3b")
    fp32, bf16 = (estimate(cfg, {}, UMT5_XXL, dtype) for dtype in (torch.float32, torch.bfloat16))
    assert bf16.offloaded < 16 * GIB < bf16.resident < 24 * GIB < fp32.offloaded
    check_fits_gpu(bf16, 24 * GIB, size="480x832", dtype=torch.bfloat16, offload=False)  # fits: no error
    with pytest.raises(SettingError, match="device=cuda: this GPU has 24.0 GiB free but the Wan model at 480x832 in "
                                           "fp32 needs about .* GiB \\(estimated from its configs\\); give dtype=bf16 "
                                           "\\(about .* GiB\\)$"):
        check_fits_gpu(fp32, 24 * GIB, size="480x832", dtype=torch.float32, offload=False, bf16=bf16)
    with pytest.raises(SettingError, match="give offload_text_encoder \\(about .* GiB\\)$"):
        check_fits_gpu(bf16, 16 * GIB, size="480x832", dtype=torch.bfloat16, offload=False, bf16=bf16)
    with pytest.raises(SettingError, match="use a GPU with more memory or a smaller size$"):
        check_fits_gpu(bf16, 4 * GIB, size="480x832", dtype=torch.bfloat16, offload=True, bf16=bf16)


def test_longlive_base_and_its_lora_pt(wan, tmp_path):
    """LongLive's lora.pt given as an adapter is folded into the weights (W + B A at LongLive's alpha = rank), and the
    known-model table gives LongLive's window: 3 sinks in 12 frames."""
    gen = torch.Generator().manual_seed(3)
    down, up = torch.randn(4, 24, generator=gen), torch.randn(24, 4, generator=gen)
    torch.save({"generator_lora": {"base_model.model.blocks.0.self_attn.q.lora_A.weight": down,
                                   "base_model.model.blocks.0.self_attn.q.lora_B.weight": up}}, tmp_path / "lora.pt")
    plain = ca2vdm.load_pipeline(base=wan[0], checkpoint=wan[1], size=(32, 32), device="cpu")
    folded = ca2vdm.load_pipeline(base=wan[0], checkpoint=wan[1], size=(32, 32), device="cpu",
                                  lora=tmp_path / "lora.pt")
    cfg = folded.model.cfg
    assert folded.metadata.raw["preset"] == "longlive" and (cfg.sink_frames, cfg.max_context_frames) == (3, 9)
    weight = "blocks.0.attn1.to_q.weight"
    expected = plain.model.state_dict()[weight] + up @ down
    assert (folded.model.state_dict()[weight] - expected).abs().max() <= 1e-6
    assert [c.pixels.shape[1] for c in folded.generate(5, prompt=PROMPT)] == [9, 12, 12, 12, 12]  # past the sinks


def test_the_server_continues_an_uploaded_video_in_whole_groups(wan, tmp_path):
    """A 7-frame upload through Wan's VAE (frame 0 alone, then groups of 4): its first 5 frames are shown and
    continued, as the command line keeps them."""
    from ca2vdm.io.video_writer import VideoWriter
    from ca2vdm.serve.catalog import Offered
    from ca2vdm.serve.frames import pixel_chunks

    upload = tmp_path / "upload.mp4"
    with VideoWriter(upload, fps=8) as writer:
        writer.write(np.random.default_rng(0).integers(0, 255, (7, 32, 32, 3), dtype=np.uint8))
    pipe = ca2vdm.load_pipeline(base=wan[0], checkpoint=wan[1], size=(32, 32), device="cpu")
    offered = Offered("sf", wan[1], pipe, [])
    chunks = list(pixel_chunks(offered, label=None, seed=0, chunks=2, step_cache="none", step_cache_options={},
                               first_frame=upload, poll=lambda: None, prompt=PROMPT))
    assert [(c.kind, len(c.pixels)) for c in chunks] == [("given", 5), ("chunk", 12), ("chunk", 12)]
