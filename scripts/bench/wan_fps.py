"""Wan 1.3B generating video end to end, the figures users compare (Self-Forcing 17 FPS, LongLive 20.7 FPS on one
H100, their READMEs): frames per second and time to first frame, with the VAE decoding every chunk.

    python scripts/bench/wan_fps.py --device cuda --dtype bf16 --size 480x832 --chunks 10     # the GPU check
    python scripts/bench/wan_fps.py --tiny --size 32x32 --chunks 3 --compile-backend aot_eager  # CPU dry run

Speed does not depend on the weights, so no download: the ``wan-1.3b`` transformer (30 blocks, 1536 wide) and Wan
2.1's VAE are built from their configs with random weights (``--tiny``: the tiny folder's sizes), sampled as
Self-Forcing samples (the known-model table's ``self-forcing``: 4 steps, shift 5, chunks of 3 latent frames, 18
frames of context, unguided), through the library's own ``Pipeline.generate`` (each chunk decoded through the VAE's
carried feature cache). The prompt is 512 seeded random token vectors (UMT5-XXL's encoding of a prompt happens once,
before the first chunk, and is not part of these figures). Modes, each a fresh video of ``--chunks`` chunks:

* ``kv``: the KV cache; ``none``: the window recomputed at every step (the usual autoregressive baseline);
* ``kv+taylorseer``: the KV cache with the step cache the README recommends (TaylorSeer, interval 2);
* ``kv+compile``: the blocks compiled (``--compile-backend``; the compile's seconds reported apart, as
  ``ca2vdm generate --compile`` does, and the video timed after it).

Per mode: time to first frame (the first chunk denoised and decoded, from the generation's start), frames per
second over the whole video and over the chunks after the first, seconds per chunk, and the peak memory
(``torch.cuda.max_memory_allocated``, reset per mode; on the CPU the process's peak RSS). Writes JSON through
ca2vdm.io.results.
"""
import argparse
import resource
import time

import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.tiny_wan import TRANSFORMER, VAE
from ca2vdm.cli.args import count, frame_size, new_parser, seed
from ca2vdm.config import CodecConfig, SamplerSettings, model_config
from ca2vdm.config.presets import PRESETS
from ca2vdm.encoders.text import TextEncoder
from ca2vdm.encoders.wan_vae import WanCodec
from ca2vdm.generation.api import Pipeline
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.models.registry import build_model
from ca2vdm.runtime.device import dtype_name, resolve_device, resolve_dtype
from ca2vdm.sampling.compile import compile_blocks, warm_up
from ca2vdm.sampling.pipeline import LongVideoPipeline

MODES = ("kv", "none", "kv+taylorseer", "kv+compile")  # compile last: it changes the model's blocks for good
TAYLORSEER = {"interval": 2}
PROMPT = "a fox running through the snow"
TINY = dict(in_channels=16, patch_size=2, hidden_size=24, depth=2, num_heads=2, ffn_dim=TRANSFORMER["ffn_dim"],
            text_dim=32)  # the tiny folder's transformer (ca2vdm/checkpoints/tiny_wan.py)


class RandomPrompts(TextEncoder):
    """Stands in for UMT5: every prompt is its own seeded random token vectors (its encoding is not timed)."""

    def __init__(self, max_tokens: int, dim: int):
        super().__init__(max_tokens)
        self.dim = dim

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return [list(range(1, len(p.split()) + 2)) for p in prompts]

    def embed_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.randn(*ids.shape, self.dim, generator=torch.Generator().manual_seed(int(ids.sum())))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Pipeline:
    """The random-weights pipeline: the transformer, Wan's VAE as its codec, the stand-in prompts."""
    from diffusers import AutoencoderKLWan

    height, width = args.size
    preset = PRESETS["self-forcing"]
    cfg = model_config("wan-1.3b", resolution=height // 8, width=width // 8, **preset["model"],
                       **(TINY if args.tiny else {}))
    torch.manual_seed(args.seed)
    with torch.device(device):  # initialised where it runs: a 1.4B model's random init on the CPU takes long
        model = build_model(cfg).eval()
        vae = AutoencoderKLWan(**(VAE if args.tiny else {})).eval()
    vae = vae if dtype == torch.float32 else vae.to(dtype)
    model, codec = model.to(dtype), WanCodec(vae, CodecConfig(kind="diffusers"))
    settings = SamplerSettings(**preset["sampler"])
    sampler = LongVideoPipeline(model, settings, pixel_space=False, text_encoder=RandomPrompts(cfg.text_tokens,
                                                                                                cfg.text_dim))
    return Pipeline(sampler, codec, CheckpointMetadata(cfg, settings, codec.metadata()))


def run_mode(pipe: Pipeline, mode: str, chunks: int, device: torch.device) -> dict:
    """One video of ``chunks`` chunks in ``mode``: time to first frame, frames per second, seconds per chunk, peak."""
    changes = {"cache": "none"} if mode == "none" else {"step_cache": "taylorseer",
                                                         "step_cache_options": TAYLORSEER} if "taylorseer" in mode \
        else {}
    pipe = pipe.with_settings(**changes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, frames = [], []
    sync(device)
    tic = time.perf_counter()
    for chunk in pipe.generate(chunks, prompt=PROMPT, seed=0):
        sync(device)  # the chunk's pixels are on the CPU: decoded and copied
        seconds.append(time.perf_counter() - tic - sum(seconds))
        frames.append(chunk.pixels.shape[1])
    total = sum(seconds)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2 ** 20
    return {"time_to_first_frame_s": seconds[0], "fps": sum(frames) / total,
            "fps_after_first": sum(frames[1:]) / sum(seconds[1:]) if chunks > 1 else None,
            "seconds_per_chunk": seconds, "pixel_frames": frames, "peak_mb": peak}


def main() -> None:
    p = new_parser(__doc__)
    p.add_argument("--size", type=frame_size, default=(480, 832), help="frame size HxW in pixels (multiples of 16)")
    p.add_argument("--chunks", type=count(1, 10 ** 4), default=10,
                   help="chunks of each video (the first includes the first frame)")
    p.add_argument("--tiny", action="store_true", help="the tiny folder's transformer and VAE (a CPU dry run)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to time")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile's backend for kv+compile "
                   "(aot_eager: the same graphs without code generation, a quick check)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random weights")
    p.add_output("--out", default="outputs/bench/wan_fps.json", help="JSON file for the figures")
    args = p.parse_args()
    if args.size[0] % 16 or args.size[1] % 16:
        p.error(f"--size {args.size[0]}x{args.size[1]}: give multiples of 16 (the VAE's 8 x the patch's 2)")
    out = check_results_path(args.out)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tic = time.perf_counter()
    pipe = build(args, device, dtype)
    print(f"built {'the tiny Wan' if args.tiny else 'Wan 1.3B'} at {args.size[0]}x{args.size[1]} in "
          f"{time.perf_counter() - tic:.0f} s", flush=True)
    modes, compile_seconds = {}, None
    with torch.no_grad():
        for mode in [m for m in MODES if m in args.modes]:
            if mode == "kv+compile":
                compile_blocks(pipe.model, backend=args.compile_backend)
                compile_seconds = warm_up(pipe.sampler, prompt=PROMPT)
            modes[mode] = run_mode(pipe, mode, args.chunks, device)
            r = modes[mode]
            print(f"{mode}: {r['fps']:.2f} frames/s ({r['fps_after_first'] or 0:.2f} after the first chunk), first "
                  f"frame after {r['time_to_first_frame_s']:.2f} s, peak {r['peak_mb']:.0f} MiB", flush=True)
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "dtype": dtype_name(dtype), "model": "tiny" if args.tiny else "wan-1.3b (random weights)",
              "size": f"{args.size[0]}x{args.size[1]}", "chunks": args.chunks, "steps": pipe.settings.steps,
              "chunk_frames": pipe.model.cfg.chunk_frames, "context_frames": pipe.model.cfg.max_context_frames,
              "step_cache": {"taylorseer": TAYLORSEER}, "compile_backend": args.compile_backend,
              "compile_seconds": compile_seconds, "modes": modes}
    if "kv" in modes and "none" in modes:
        result["kv_over_recompute_fps"] = modes["kv"]["fps"] / modes["none"]["fps"]
    write_results(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
