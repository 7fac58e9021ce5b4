"""The causal Wan at the real Wan 2.1 T2V 1.3B configuration (30 blocks, 1536 wide, 12 heads; random weights): seconds
per chunk with the cache against recomputing the window at every step, and the cache's bytes.

    python scripts/bench/wan.py                              # 64x64 pixels (8x8 latents) on this CPU, fp32
    python scripts/bench/wan.py --size 480x832 --device cuda --dtype bf16   # the GPU setting (issue 40)

The model is ``wan-1.3b`` (Self-Forcing's layout: chunks of 3 latent frames, 18 frames of context, absolute
positions) at the given pixel size (latents 8x smaller, 16 channels); the prompt is 512 random token vectors (the text
encoder is not part of this figure). Both modes start from a full window (18 given latent frames: the cache commits
them, the recompute mode keeps them) and sample ``--chunks`` chunks of ``--steps`` steps; the seconds of each chunk are
reported and their mean compared. Also printed, by arithmetic from the config (the cache built on the meta device,
nothing allocated): the cache's GiB at 480x832 in bf16 for Self-Forcing's window and LongLive's, against
Self-Forcing's own global cache (32760 tokens a block). The parameter count is checked against diffusers' model of the
same config. Writes wan.json.
"""
import time
from pathlib import Path

import torch

from ca2vdm.cli.args import count, new_parser
from ca2vdm.config import model_config
from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.models.registry import build_model
from ca2vdm.sampling.pipeline import LongVideoPipeline

GIB = 2 ** 30
SELF_FORCING_TOKENS = 32760  # Self-Forcing's global KV cache per block (21 latent frames of 1560 tokens, hard-coded)


def wan_config(size: str, **overrides):
    height, width = (int(v) for v in size.split("x"))
    if height % 16 or width % 16:
        raise SystemExit(f"--size {size}: height and width must be multiples of 16 (VAE 8 x patch 2)")
    return model_config("wan-1.3b", resolution=height // 8, width=width // 8, **overrides)


def cache_sizes() -> dict:
    """GiB of one video's cache at 480x832 in bf16 (layouts of wan-1.3b), against Self-Forcing's global cache."""
    out = {}
    for name, fields in {"self-forcing window (18 + 3 frames)": {},
                         "longlive window (3 sinks + 6 + 3 frames, absolute)": dict(max_context_frames=9,
                                                                                     sink_frames=3),
                         "longlive window, ring positions (+ the sinks as written)": dict(
                             max_context_frames=9, sink_frames=3, positions="ring")}.items():
        cfg = wan_config("480x832", **fields)
        with torch.device("meta"):
            cache = build_model(cfg).new_cache(1, device="meta", dtype=torch.bfloat16)
        out[name] = cache.nbytes() / GIB
    cfg = wan_config("480x832")
    out["self-forcing's own global cache (32760 tokens)"] = \
        SELF_FORCING_TOKENS * cfg.hidden_size * 2 * cfg.depth * 2 / GIB  # K and V, bf16
    out["prompt K/V (512 tokens, one row)"] = cfg.text_tokens * cfg.hidden_size * 2 * cfg.depth * 2 / GIB
    return out


def parameters(cfg) -> tuple[int, int]:
    """Parameters of our model and of diffusers' WanTransformer3DModel for the same config (meta device)."""
    from diffusers import WanTransformer3DModel

    from ca2vdm.models.wan.model import diffusers_config

    with torch.device("meta"):
        ours, theirs = build_model(cfg), WanTransformer3DModel(**diffusers_config(cfg))
    return sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs.parameters())


def time_chunks(pipe: LongVideoPipeline, window: torch.Tensor, prompt: TextEmbeddings, chunks: int) -> list[float]:
    state = pipe.start(first_frames=window, prompt=prompt, seed=0)
    seconds = []
    for _ in range(chunks):
        start = time.perf_counter()
        pipe.next_chunk(state)
        if window.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    p = new_parser(__doc__)
    p.add_argument("--size", default="64x64", help="pixel HEIGHTxWIDTH (latents 8x smaller)")
    p.add_argument("--steps", type=count(1, 1000), default=4, help="denoising steps per chunk (Self-Forcing's 4)")
    p.add_argument("--chunks", type=count(1, 10 ** 4), default=2, help="chunks timed in each mode, after a full window")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="precision of the weights and cache")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for the JSON")
    args = p.parse_args()
    out = check_results_path(Path(args.out_dir) / "wan.json")
    sizes = cache_sizes()
    for name, gib in sizes.items():
        print(f"480x832 bf16 cache, {name}: {gib:.2f} GiB")
    cfg = wan_config(args.size)
    ours, theirs = parameters(cfg)
    print(f"parameters: {ours:,} (diffusers' WanTransformer3DModel of the same config: {theirs:,})")
    assert ours == theirs
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(cfg).to(device, dtype).eval()
    print(f"built {cfg.name} at {args.size} ({cfg.resolution}x{cfg.frame_width} latents) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    gen = torch.Generator().manual_seed(1)
    prompt = TextEmbeddings(torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=gen),
                            torch.ones(1, cfg.text_tokens, dtype=torch.bool))
    window = torch.randn(1, cfg.in_channels, cfg.max_context_frames, cfg.resolution, cfg.frame_width,
                         generator=gen).to(device)
    rows = {}
    for mode in ("kv", "none"):
        pipe = LongVideoPipeline(model, steps=args.steps, shift=5.0, cond_noise=0.0, cache=mode, pixel_space=False)
        rows[mode] = time_chunks(pipe, window, prompt, args.chunks)
        print(f"cache {mode}: seconds per chunk {', '.join(f'{s:.2f}' for s in rows[mode])}", flush=True)
    mean = {mode: sum(s) / len(s) for mode, s in rows.items()}
    cache_bytes = model.new_cache(1).nbytes()
    print(f"mean seconds per chunk: cache {mean['kv']:.2f}, recompute {mean['none']:.2f} "
          f"({mean['none'] / mean['kv']:.2f}x); cache {cache_bytes / 2 ** 20:.1f} MiB at this size ({args.dtype})")
    write_results(out, {"device": args.device, "dtype": args.dtype, "size": args.size, "steps": args.steps,
                        "model": cfg.name, "parameters": ours, "parameters_diffusers": theirs,
                        "latent_frame": [cfg.in_channels, cfg.resolution, cfg.frame_width],
                        "chunk_frames": cfg.chunk_frames, "context_frames": cfg.max_context_frames,
                        "seconds_per_chunk": rows, "mean_seconds_per_chunk": mean,
                        "recompute_over_cache": mean["none"] / mean["kv"], "cache_bytes": cache_bytes,
                        "gib_480x832_bf16": sizes})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
