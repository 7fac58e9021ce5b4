"""Estimated peak GPU memory of Wan2.1-T2V-1.3B generation per frame size and precision, before any GPU run.

    python scripts/bench/wan_memory.py                                  # 480x832 and 720x1280, bf16 and fp32
    python scripts/bench/wan_memory.py --sizes 480x832 --dtypes bf16 --window 12 --sinks 3 --out wan_memory.json

From the configs alone (no weights, no GPU), by the arithmetic ``ca2vdm generate --base`` checks a GPU with
(:mod:`ca2vdm.generation.wan_memory`, whose docstring lists the parts): the 1.3B transformer, UMT5-XXL and Wan 2.1's
VAE counted on PyTorch's meta device, the KV cache of the window, the prompt's K/V, one chunk's activations and the
VAE's decoding of a chunk; the peak with UMT5 resident, and offloaded after encoding (``--offload-text-encoder``).
These are estimates (the allocator's fragmentation and CUDA's context, ~0.5 GiB, are not counted); a GPU run's
``--stats`` (peak_gpu_mb) is the measurement. Writes JSON through ca2vdm.io.results.
"""
import argparse

import torch

from ca2vdm.cli.args import count, new_parser
from ca2vdm.config import model_config
from ca2vdm.encoders.umt5 import UMT5_XXL
from ca2vdm.generation.wan_memory import GIB, estimate
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.runtime.device import DTYPES

MIB = 2 ** 20


def row(size: tuple[int, int], dtype: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """Every part's MiB at one frame size and precision, and the peaks with and without offloading UMT5."""
    height, width = size
    cfg = model_config("wan-1.3b", resolution=height // 8, width=width // 8, chunk_frames=args.chunk_frames,
                       max_context_frames=args.window + args.sinks - args.chunk_frames, sink_frames=args.sinks)
    memory = estimate(cfg, {}, UMT5_XXL, DTYPES[dtype], args.batch * (2 if args.cfg else 1))
    peaks = {"text_encoder_resident": memory.resident, "text_encoder_offloaded": memory.offloaded}
    tokens = (cfg.resolution // cfg.patch_size) * (cfg.frame_width // cfg.patch_size)
    return {"size": f"{height}x{width}", "dtype": dtype, "tokens_per_frame": tokens,
            "cache_frames": cfg.max_context_frames + cfg.chunk_frames,
            "mib": {k: round(v / MIB, 1) for k, v in memory.parts.items()},
            "peak_gib": {k: round(v / GIB, 2) for k, v in peaks.items()},
            "fits_24gib": {k: v < 24 * GIB for k, v in peaks.items()}}, memory.parameters


def size_arg(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()) or int(height) % 16 or int(width) % 16:
        raise argparse.ArgumentTypeError(f"{text!r}: give HxW in pixels, multiples of 16 (e.g. 480x832)")
    return int(height), int(width)


def main() -> None:
    p = new_parser(__doc__)
    p.add_argument("--sizes", type=size_arg, nargs="+", default=[(480, 832), (720, 1280)],
                   help="frame sizes HxW in pixels (multiples of 16)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"],
                   help="precisions of the weights, caches and activations")
    p.add_argument("--chunk-frames", type=count(1, 64), default=3, help="latent frames per chunk (Self-Forcing: 3)")
    p.add_argument("--window", type=count(1, 1024), default=12,
                   help="latent frames of K/V kept besides the sinks (LongLive: 12)")
    p.add_argument("--sinks", type=count(0, 1024), default=3,
                   help="attention-sink frames kept besides the window (LongLive: 3)")
    p.add_argument("--batch", type=count(1, 1024), default=1, help="videos generated together")
    p.add_argument("--cfg", action="store_true", help="classifier-free guidance: two rows per video (distilled "
                   "Self-Forcing / LongLive students need none)")
    p.add_output("--out", default="outputs/bench/wan_memory.json", help="JSON file for the estimates")
    args = p.parse_args()
    out = check_results_path(args.out)
    with torch.no_grad():
        rows = [row(size, dtype, args) for size in args.sizes for dtype in args.dtypes]
    params = rows[0][1]
    print("parameters: " + ", ".join(f"{name} {n:,}" for name, n in params.items()))
    rows = [r for r, _ in rows]
    for r in rows:
        mib, peak = r["mib"], r["peak_gib"]
        print(f"{r['size']} {r['dtype']}: peak {peak['text_encoder_offloaded']:.2f} GiB with the text encoder "
              f"offloaded, {peak['text_encoder_resident']:.2f} GiB resident (transformer "
              f"{mib['transformer_weights'] / 1024:.2f} GiB, UMT5 {mib['text_encoder_weights'] / 1024:.2f} GiB, KV "
              f"cache of {r['cache_frames']} frames {mib['kv_cache'] / 1024:.2f} GiB, chunk activations "
              f"{mib['transformer_activations'] / 1024:.2f} GiB, VAE decode of a chunk "
              f"{(mib['vae_feature_cache'] + mib['vae_activations']) / 1024:.2f} GiB)")
    write_results(out, {"model": "Wan2.1-T2V-1.3B + UMT5-XXL + Wan 2.1 VAE", "estimate": True,
                        "settings": {"chunk_frames": args.chunk_frames, "window": args.window, "sinks": args.sinks,
                                     "batch": args.batch, "cfg": args.cfg}, "parameters": params, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
