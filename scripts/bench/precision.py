"""Cached sampling at fp32, bf16 and fp16 weights (and KV cache): seconds per chunk, cache size, error against fp32.

    python scripts/bench/precision.py                       # shipped demo checkpoint, 8 chunks, CPU
    python scripts/bench/precision.py --device cuda --chunks 20

Every precision samples the same seed (the sampler's noise is float32 at every precision) and is teacher-forced on
the fp32 run's chunks (``next_chunk(commit_frames=...)``): chunk i of every precision is conditioned on the same
frames, so its difference from the fp32 chunk is the rounding of one chunk, not the divergence of a free-running
rollout. The precisions run in lockstep (chunk i of each, in an order that rotates with i) so a machine whose speed
drifts shifts all alike. Per precision: median seconds of the cached chunks (the first-frame chunk excluded), its
ratio to fp32, KV cache bytes, and the worst and mean absolute difference from fp32 of frames in [-1, 1].
Writes precision.json.
"""
from pathlib import Path

import torch

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.cli.args import count, new_parser, seed
from ca2vdm.evaluation.lockstep import measure_precisions
from ca2vdm.io.paths import DEFAULT_CHECKPOINT
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.runtime.device import DTYPES, resolve_device


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="weights file or training checkpoint folder")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                   help="precisions compared with fp32")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=8,
                   help="chunks per precision, each teacher-forced on the fp32 chunks")
    p.add_argument("--label", type=count(0), default=0, help="class label (the demo model has 3)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the sampling noise")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for precision.json")
    args = p.parse_args()
    out = check_results_path(Path(args.out_dir) / "precision.json", [args.checkpoint])
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    label = args.label if model.cfg.num_classes else None
    summary, rows = measure_precisions(model, meta, args.dtypes, args.chunks, label, args.seed)
    print(f"{'dtype':6s} {'s/chunk':>8s} {'speed vs fp32':>14s} {'KV cache MB':>12s} {'max |diff|':>11s} "
          f"{'mean |diff|':>12s}")
    for name, row in summary.items():
        print(f"{name:6s} {row['median_seconds_per_chunk']:8.3f} {row['speed_vs_fp32']:13.2f}x "
              f"{row['kv_cache_bytes'] / 2 ** 20:12.2f} {row['max_abs_vs_fp32']:11.4f} {row['mean_abs_vs_fp32']:12.5f}")
    result = {"checkpoint": args.checkpoint, "device": str(device), "chunks": args.chunks, "seed": args.seed,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "summary": summary, "per_chunk": rows}
    write_results(out, result, [args.checkpoint])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
