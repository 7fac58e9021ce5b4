"""Cost of autoregressive generation vs length: shared KV cache against the two recompute baselines.

    python scripts/bench_ar_scaling.py                 # shipped checkpoint, 20 chunks, CPU
    python scripts/bench_ar_scaling.py --chunks 10 --device cuda

Modes, same model, seed and noise:
  (a) kv    KV cache shared across denoising steps and chunks (Ca2-VDM)
  (b) none  no cache: the conditioning window is recomputed at every denoising step (fixed window)
  (c) full  no cache: all previous frames are recomputed at every step (extendable context, quadratic)
  kv+teacache  (a) with TeaCache step skipping (--teacache-thresh; FLOPs scaled by the passes actually run)
Records per-chunk wall time (the fastest of --repeats runs) and analytic FLOPs, prints a table, writes
ar_scaling.json and ar_scaling.png.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca2vdm.checkpoint import load_model  # noqa: E402
from ca2vdm.config import ModelConfig  # noqa: E402
from ca2vdm.generate import DEFAULT_CHECKPOINT, resolve_device  # noqa: E402
from ca2vdm.pipeline import LongVideoPipeline  # noqa: E402
from ca2vdm.step_cache import TeaCache  # noqa: E402
from ca2vdm.step_cache.teacache import IDENTITY  # noqa: E402

MODES = ("kv", "none", "full")


def forward_flops(cfg: ModelConfig, query_frames: int, key_frames: int) -> float:
    """Multiply-add FLOPs (x2) of one forward pass over ``query_frames`` frames whose temporal attention reads
    ``key_frames`` frames (the masked recompute passes compute the full square, so there key = query)."""
    S, D = (cfg.resolution // cfg.patch_size) ** 2, cfg.hidden_size
    linear = 2 * S * D * D * (8 + 2 * cfg.mlp_ratio) + 2 * 9 * D * D  # qkv+proj twice, MLP, adaLN; per frame
    attention = 4 * S * S * D                                          # spatial, per frame
    io = 2 * S * D * cfg.patch_size ** 2 * cfg.in_channels * 2         # patch embedding and final layer
    temporal = 4 * S * query_frames * key_frames * D
    return cfg.depth * (query_frames * (linear + attention) + temporal) + query_frames * io


def chunk_flops(cfg: ModelConfig, mode: str, frames_before: int, length: int, steps: int, branches: int) -> float:
    """Analytic FLOPs of generating one chunk of ``length`` frames after ``frames_before`` frames."""
    if mode == "kv":
        visible = min(cfg.max_context_frames, frames_before) + length
        per_step, commit = forward_flops(cfg, length, visible), forward_flops(cfg, length, visible)
        return branches * (steps * per_step + commit)
    context = frames_before if mode == "full" else min(cfg.max_context_frames, frames_before)
    return branches * steps * forward_flops(cfg, context + length, context + length)


def measure(model, meta, mode: str, chunks: int, seed: int, teacache_thresh: float) -> list[dict]:
    step_cache = None
    if mode == "kv+teacache":
        step_cache = TeaCache(teacache_thresh, meta.get("teacache_coefficients") or IDENTITY)
    pipe = LongVideoPipeline.from_metadata(model, meta, cache_mode=mode.split("+")[0], step_cache=step_cache)
    state = pipe.start(seed=seed)
    pipe.next_chunk(state)  # the first frame (and warm-up); not timed
    rows = []
    sync = torch.cuda.synchronize if model.x_embedder.weight.is_cuda else (lambda: None)
    for index in range(chunks):
        frames_before = state.frames
        sync()
        tic = time.perf_counter()
        chunk = pipe.next_chunk(state)
        sync()
        evaluated = chunk.model_evals / (chunk.model_evals + chunk.skipped_evals)  # share of stack passes run
        rows.append({"chunk": index, "seconds": time.perf_counter() - tic,
                     "flops": evaluated * chunk_flops(model.cfg, mode.split("+")[0], frames_before,
                                                      chunk.frames.shape[2], pipe.steps, state.conditioning.groups)})
    model.disable_cache()
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, rows in results.items():
        seconds = [r["seconds"] for r in rows]
        ax1.plot(range(1, len(rows) + 1), seconds, "o-", ms=3, label=mode)
        ax2.plot(range(1, len(rows) + 1), [sum(seconds[:i + 1]) for i in range(len(seconds))], "o-", ms=3, label=mode)
    ax1.set(xlabel="chunk", ylabel="seconds per chunk", title="time per chunk")
    ax2.set(xlabel="chunk", ylabel="seconds", title="cumulative time")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="runs per mode; each chunk's fastest time is kept")
    p.add_argument("--teacache-thresh", type=float, default=0.2, help="also run kv + TeaCache (0: skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="outputs/bench")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    results = {}
    for mode in MODES + ("kv+teacache",) * (args.teacache_thresh > 0):  # per chunk, the fastest of the repeats: timings on shared machines are noisy
        runs = [measure(model, meta, mode, args.chunks, args.seed, args.teacache_thresh) for _ in range(args.repeats)]
        results[mode] = [min(rows, key=lambda r: r["seconds"]) for rows in zip(*runs)]
    last, fifth = args.chunks - 1, min(4, args.chunks - 1)
    print(f"{'chunk':>5} " + " ".join(f"{m + ' s':>14} {m + ' GFLOP':>16}" for m in results))
    for i in range(args.chunks):
        print(f"{i + 1:5d} " + " ".join(f"{rows[i]['seconds']:14.3f} {rows[i]['flops'] / 1e9:16.2f}"
                                        for rows in results.values()))
    total = {m: sum(r["seconds"] for r in rows) for m, rows in results.items()}
    flops = {m: sum(r["flops"] for r in rows) for m, rows in results.items()}
    summary = {
        "speedup_kv_over_none": total["none"] / total["kv"],
        "flop_ratio_none_over_kv": flops["none"] / flops["kv"],
        "speedup_kv_over_full": total["full"] / total["kv"],
        "flop_ratio_full_over_kv": flops["full"] / flops["kv"],
        "kv_last_chunk_over_fifth": results["kv"][last]["seconds"] / results["kv"][fifth]["seconds"],
    }
    if args.chunks >= 12:  # the same question, less sensitive to one slow chunk: last 5 vs chunks 3-7 (medians)
        summary["kv_last5_over_chunks3to7_median"] = (statistics.median(r["seconds"] for r in results["kv"][-5:])
                                                      / statistics.median(r["seconds"] for r in results["kv"][2:7]))
    if "kv+teacache" in results:
        summary["speedup_kv_teacache_over_none"] = total["none"] / total["kv+teacache"]
    for key, value in summary.items():
        print(f"{key:28} {value:6.2f}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ar_scaling.json").write_text(json.dumps(
        {"checkpoint": args.checkpoint, "device": str(device), "chunks": args.chunks, "repeats": args.repeats,
         "torch_threads": torch.get_num_threads(), "summary": summary, "per_chunk": results}, indent=2) + "\n")
    plot(results, out / "ar_scaling.png")
    print(f"wrote {out / 'ar_scaling.json'} and {out / 'ar_scaling.png'}")


if __name__ == "__main__":
    main()
