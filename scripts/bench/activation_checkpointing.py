"""Peak memory of one training step with and without activation checkpointing (``train.activation_checkpointing``).

    python scripts/bench/activation_checkpointing.py --out docs/results/activation_checkpointing.json
    python scripts/bench/activation_checkpointing.py --preset base --device cuda --out ac_gpu.json

Each mode runs in a fresh process (peak memory is per process): a randomly initialised model of ``--preset``, made
ready by :func:`ca2vdm.parallelize.parallelize`, takes one forward and backward pass of the training loss on a random
clip of the preset's full length (the longest sequence training attends over). On the CPU the figure is the peak
resident set size (ru_maxrss) minus the resident size before the step, with glibc's mmap threshold lowered to 64 KiB
so that freed tensors leave the resident set at once; on CUDA it is ``torch.cuda.max_memory_allocated`` over the
allocation before the step. Both include the gradients (the size of the weights) besides the activations. The two
modes must give the same loss (the script checks it); seconds are reported as a ratio of the two runs.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.results import check_results_path, write_results

ROOT = Path(__file__).resolve().parents[2]


def step(preset: str, batch: int, checkpointing: bool, device: str) -> dict:
    """One training forward + backward; memory (MB) over the level before it and seconds."""
    import torch

    from ca2vdm.config import Config, model_config
    from ca2vdm.models.registry import build_model
    from ca2vdm.training.losses import causal_flow_loss
    from ca2vdm.training.parallelize import parallelize

    torch.manual_seed(0)
    cfg = model_config(preset)
    config = Config(model=cfg)
    config.train.activation_checkpointing = checkpointing
    model = parallelize(build_model(cfg).to(device).train(), config, torch.device(device))
    gen = torch.Generator(device).manual_seed(1)
    video = torch.randn(batch, cfg.in_channels, cfg.clip_frames, cfg.resolution, cfg.resolution, generator=gen,
                        device=device)  # (B, C, T, H, W)
    labels = torch.zeros(batch, dtype=torch.long, device=device) if cfg.num_classes else None
    num_cond = cfg.clip_frames - cfg.chunk_frames  # the last chunk is noisy: every frame runs through the blocks
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    tic = time.perf_counter()
    loss = causal_flow_loss(model, video, labels, num_cond, cfg.chunk_frames, 0.05, generator=gen)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = time.perf_counter() - tic
    params = sum(p.numel() for p in model.parameters())
    return {"peak_mb": (peak - before) / 2**20, "seconds": seconds, "loss": loss.item(), "parameters": params}


def main() -> None:
    p = new_parser(__doc__)
    p.add_argument("--preset", default="small", help="model registry name (ca2vdm.config.MODEL_CONFIGS)")
    p.add_argument("--batch", type=count(1, 4096), default=1, help="clips per training step, 1 .. 4096")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where to train (peak RSS on cpu, allocator peak on cuda)")
    p.add_output("--out", default="outputs/bench/activation_checkpointing.json", help="JSON file for the figures")
    p.add_argument("--child", choices=["off", "on"], help=argparse.SUPPRESS)  # one mode, in this process
    args = p.parse_args()
    if args.child:
        print(json.dumps(step(args.preset, args.batch, args.child == "on", args.device)))
        return
    check_results_path(args.out)  # before the measurement, not after it
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    runs = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--preset", args.preset, "--batch", str(args.batch), "--device",
               args.device, "--child", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        runs[mode] = json.loads(out.strip().splitlines()[-1])
        print(f"activation checkpointing {mode:3s}: peak {runs[mode]['peak_mb']:8.1f} MB over the model, "
              f"loss {runs[mode]['loss']:.6f}", flush=True)
    if runs["off"]["loss"] != runs["on"]["loss"]:
        raise SystemExit(f"the two modes disagree: loss {runs['off']['loss']} vs {runs['on']['loss']}")
    result = {"preset": args.preset, "batch": args.batch, "device": args.device,
              "metric": "peak_rss_mb" if args.device == "cpu" else "max_memory_allocated_mb",
              "parameters": runs["off"]["parameters"], "runs": runs,
              "peak_on_over_off": runs["on"]["peak_mb"] / runs["off"]["peak_mb"],
              "seconds_on_over_off": runs["on"]["seconds"] / runs["off"]["seconds"]}
    print(f"peak with / without: {result['peak_on_over_off']:.3f}; step time with / without: "
          f"{result['seconds_on_over_off']:.3f}")
    print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
