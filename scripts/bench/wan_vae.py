"""Wan's VAE decoded chunk by chunk (ca2vdm.encoders.wan_vae) with random weights: speed, memory, exactness.

    python scripts/bench/wan_vae.py --device cuda --dtype bf16 --size 480x832 --chunks 10   # Wan 2.1's VAE config
    python scripts/bench/wan_vae.py --tiny --size 32x32 --chunks 3                         # a tiny VAE (CPU dry run)

Speed and memory do not depend on the weights, so no download: AutoencoderKLWan is built from its config (Wan 2.1's
by default) with random weights. Decodes ``--chunks`` chunks of ``--chunk-frames`` latent frames through one stream
(the decoder's feature cache carried), as generation does, and reports seconds per chunk (after the first), pixel
frames per second, the feature cache's bytes after the first and the last chunk (flat), the peak GPU memory
(torch.cuda.max_memory_allocated; on the CPU: none), and the largest difference between the first two chunks
streamed and the same latents decoded whole by ``vae.decode``. Writes JSON through ca2vdm.io.results.
"""
import argparse
import time

import torch

from ca2vdm.cli.args import count, new_parser, seed
from ca2vdm.config import CodecConfig
from ca2vdm.encoders.wan_vae import WanCodec
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.runtime.device import dtype_name, resolve_device, resolve_dtype

TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])


def size_arg(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()) or int(height) % 8 or int(width) % 8:
        raise argparse.ArgumentTypeError(f"{text!r}: give HxW in pixels, multiples of 8 (e.g. 480x832)")
    return int(height), int(width)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = new_parser(__doc__)
    p.add_argument("--size", type=size_arg, default=(480, 832), help="frame size HxW in pixels (multiples of 8)")
    p.add_argument("--chunks", type=count(2, 10 ** 4), default=10,
                   help="chunks decoded through one stream (at least 2)")
    p.add_argument("--chunk-frames", type=count(1, 64), default=3, help="latent frames per chunk (Self-Forcing: 3)")
    p.add_argument("--tiny", action="store_true", help="a tiny random VAE instead of Wan 2.1's configuration")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random weights and latents")
    p.add_output("--out", default="outputs/bench/wan_vae.json", help="JSON file for the figures")
    args = p.parse_args()
    out = check_results_path(args.out)
    from diffusers import AutoencoderKLWan

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    vae = AutoencoderKLWan(**(TINY if args.tiny else {})).to(device)
    if dtype != torch.float32:
        vae = vae.to(dtype)
    codec = WanCodec(vae, CodecConfig(kind="diffusers"))
    height, width = args.size
    shape = (1, codec.channels, args.chunk_frames, height // codec.factor, width // codec.factor)
    latents = [torch.randn(shape, device=device) for _ in range(args.chunks)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stream, seconds, frames, cache = codec.stream(), [], [], []
    first_two = []
    for chunk in latents:
        sync(device)
        tic = time.perf_counter()
        pixels = stream.decode(chunk)  # (1, 3, T, H, W)
        sync(device)
        seconds.append(time.perf_counter() - tic)
        frames.append(pixels.shape[2])
        cache.append(stream.nbytes())
        if len(first_two) < 2:
            first_two.append(pixels.cpu())
    peak_mb = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    mean, std = codec.stats(latents[0])
    with torch.no_grad():
        whole = vae.decode(torch.cat(latents[:2], dim=2).to(dtype) / (1.0 / std.to(dtype)) + mean.to(dtype)).sample
    difference = (torch.cat(first_two, dim=2) - whole.float().clamp(-1, 1).cpu()).abs().max().item()
    steady = sum(seconds[1:]) / (len(seconds) - 1)
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "dtype": dtype_name(dtype), "vae": "tiny" if args.tiny else "Wan 2.1 (random weights)",
              "size": f"{height}x{width}", "chunks": args.chunks, "chunk_frames": args.chunk_frames,
              "pixel_frames": frames, "seconds": seconds, "seconds_per_chunk": steady,
              "pixel_frames_per_second": frames[-1] / steady, "feature_cache_mb": [c / 2 ** 20 for c in cache],
              "peak_mb": peak_mb, "streamed_vs_whole_max_abs": difference}
    print(f"{result['vae']} at {result['size']}, {result['dtype']} on {result['device_name']}: "
          f"{steady:.3f} s per chunk of {frames[-1]} frames ({result['pixel_frames_per_second']:.1f} frames/s), "
          f"feature cache {cache[0] / 2 ** 20:.1f} -> {cache[-1] / 2 ** 20:.1f} MiB, peak "
          f"{'n/a' if peak_mb is None else f'{peak_mb:.0f} MiB'}, streamed vs whole {difference:.2e}")
    write_results(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
