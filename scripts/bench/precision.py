"""Cached sampling at fp32, bf16 and fp16 weights (and KV cache): seconds per chunk, cache size, error against fp32.

    python scripts/bench_precision.py                       # shipped demo checkpoint, 8 chunks, CPU
    python scripts/bench_precision.py --device cuda --chunks 20

Every precision samples the same seed (the sampler's noise is float32 at every precision) and is teacher-forced on
the fp32 run's chunks (``next_chunk(commit_frames=...)``): chunk i of every precision is conditioned on the same
frames, so its difference from the fp32 chunk is the rounding of one chunk, not the divergence of a free-running
rollout. The precisions run in lockstep (chunk i of each, in an order that rotates with i) so a machine whose speed
drifts shifts all alike. Per precision: median seconds of the cached chunks (the first-frame chunk excluded), its
ratio to fp32, KV cache bytes, and the worst and mean absolute difference from fp32 of frames in [-1, 1].
Writes precision.json.
"""
import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.weights import load_model
from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.io.paths import DEFAULT_CHECKPOINT
from ca2vdm.models.dit import CausalVideoDiT
from ca2vdm.runtime.device import DTYPES, resolve_device
from ca2vdm.sampling.pipeline import LongVideoPipeline


def measure(model: CausalVideoDiT, meta: CheckpointMetadata, dtypes: list[str], chunks: int, label: int | None,
            seed: int) -> tuple[dict, dict]:
    """Per precision: (summary, per-chunk rows of seconds and worst / mean |difference from fp32|)."""
    pipes = {name: LongVideoPipeline.for_checkpoint(copy.deepcopy(model).to(DTYPES[name]), meta)
             for name in ["fp32"] + [d for d in dtypes if d != "fp32"]}
    states = {name: pipe.start(label=label, seed=seed) for name, pipe in pipes.items()}
    rows = {name: [] for name in pipes}
    others = list(pipes)[1:]
    for i in range(int(model.cfg.first_frame_chunk) + chunks):
        tic = time.perf_counter()
        reference = pipes["fp32"].next_chunk(states["fp32"]).frames  # (1, C, L, H, W): every precision's context
        rows["fp32"].append({"seconds": time.perf_counter() - tic, "max_abs": 0.0, "mean_abs": 0.0})
        for name in others[i % len(others):] + others[:i % len(others)] if others else []:
            tic = time.perf_counter()
            frames = pipes[name].next_chunk(states[name], commit_frames=reference).frames
            error = (frames - reference).abs()
            rows[name].append({"seconds": time.perf_counter() - tic, "max_abs": error.max().item(),
                               "mean_abs": error.mean().item()})
    first = int(model.cfg.first_frame_chunk)  # the first-frame chunk is one frame: left out of the timing
    median = {name: statistics.median(r["seconds"] for r in rows[name][first:]) for name in pipes}
    summary = {name: {"median_seconds_per_chunk": median[name], "speed_vs_fp32": median["fp32"] / median[name],
                      "kv_cache_bytes": pipe.model.new_cache(1).nbytes(),
                      "max_abs_vs_fp32": max(r["max_abs"] for r in rows[name]),
                      "mean_abs_vs_fp32": statistics.mean(r["mean_abs"] for r in rows[name])}
               for name, pipe in pipes.items()}
    return summary, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="weights file or training checkpoint folder")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                   help="precisions compared with fp32")
    p.add_argument("--chunks", type=int, default=8, help="chunks per precision, each teacher-forced on the fp32 chunks")
    p.add_argument("--label", type=int, default=0, help="class label (the demo model has 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--out-dir", default="outputs/bench", help="folder for precision.json")
    args = p.parse_args()
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    summary, rows = measure(model, meta, args.dtypes, args.chunks, args.label if model.cfg.num_classes else None,
                            args.seed)
    print(f"{'dtype':6s} {'s/chunk':>8s} {'speed vs fp32':>14s} {'KV cache MB':>12s} {'max |diff|':>11s} "
          f"{'mean |diff|':>12s}")
    for name, row in summary.items():
        print(f"{name:6s} {row['median_seconds_per_chunk']:8.3f} {row['speed_vs_fp32']:13.2f}x "
              f"{row['kv_cache_bytes'] / 2 ** 20:12.2f} {row['max_abs_vs_fp32']:11.4f} {row['mean_abs_vs_fp32']:12.5f}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": args.checkpoint, "device": str(device), "chunks": args.chunks, "seed": args.seed,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "summary": summary, "per_chunk": rows}
    write_text_atomic(out / "precision.json", json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'precision.json'}")

if __name__ == "__main__":
    main()
