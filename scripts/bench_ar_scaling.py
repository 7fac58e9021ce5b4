"""Cost of autoregressive generation vs length: shared KV cache against the two recompute baselines.

    python scripts/bench_ar_scaling.py                 # shipped checkpoint, 20 chunks, CPU
    python scripts/bench_ar_scaling.py --chunks 10 --device cuda

Modes, same model weights, seed and noise:
  (a) kv    KV cache shared across denoising steps and chunks (Ca2-VDM)
  (b) none  no cache: the conditioning window is recomputed at every denoising step (fixed window)
  (c) full  no cache: all previous frames are recomputed at every step (extendable context, quadratic)
  kv+teacache@T  (a) with TeaCache step skipping at threshold T (--teacache-thresh, several allowed; FLOPs count
                 the denoising passes actually run and every commit pass)
The modes run in lockstep: chunk i of every mode is timed before chunk i + 1 of any (in an order that rotates
with i), so a machine that speeds up or slows down over minutes shifts all modes alike and the ratios stay
comparable. Each chunk keeps the fastest of --repeats runs. Prints a table, writes ar_scaling.json and
ar_scaling.png.
"""
import argparse
import copy
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
from ca2vdm.plotting import plot_or_skip  # noqa: E402
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


def chunk_flops(cfg: ModelConfig, mode: str, frames_before: int, length: int, steps: int, rows: int,
                evaluated: float = 1.0) -> float:
    """Analytic FLOPs of generating one chunk of ``length`` frames after ``frames_before`` frames for ``rows`` rows
    (videos x guidance branches); a step cache computed the share ``evaluated`` of the denoising passes (the
    commit pass always runs)."""
    if mode == "kv":
        visible = min(cfg.max_context_frames, frames_before) + length
        per_step, commit = forward_flops(cfg, length, visible), forward_flops(cfg, length, visible)
        return rows * (steps * evaluated * per_step + commit)
    context = frames_before if mode == "full" else min(cfg.max_context_frames, frames_before)
    return rows * steps * evaluated * forward_flops(cfg, context + length, context + length)


def teacache_mode(threshold: float) -> str:
    return f"kv+teacache@{threshold:g}"


def new_run(model, meta, mode: str, seed: int, batch: int, label: int | None):
    """A pipeline on its own copy of the model (step caches attach to a model) and its started state."""
    model = copy.deepcopy(model)
    step_cache = None
    if mode.startswith("kv+teacache@"):
        step_cache = TeaCache(float(mode.split("@")[1]), meta.get("teacache_coefficients") or IDENTITY)
    pipe = LongVideoPipeline.from_metadata(model, meta, cache_mode=mode.split("+")[0], step_cache=step_cache)
    state = pipe.start(batch=batch, seed=seed, label=label)
    pipe.next_chunk(state)  # the first frame (and warm-up); not timed
    return pipe, state


def measure(model, meta, modes: list[str], chunks: int, seed: int, batch: int = 1,
            label: int | None = 0) -> dict[str, list[dict]]:
    """Per-chunk seconds and FLOPs of every mode (``batch`` videos at once), the modes interleaved chunk by chunk.
    With a label (and the checkpoint's guidance scale) both guidance branches run, as in class-conditional use."""
    runs = {mode: new_run(model, meta, mode, seed, batch, label) for mode in modes}
    rows = {mode: [] for mode in modes}
    sync = torch.cuda.synchronize if model.x_embedder.weight.is_cuda else (lambda: None)
    for index in range(chunks):
        for mode in modes[index % len(modes):] + modes[:index % len(modes)]:
            pipe, state = runs[mode]
            frames_before = state.frames
            sync()
            tic = time.perf_counter()
            chunk = pipe.next_chunk(state)
            sync()
            seconds = time.perf_counter() - tic
            evaluated = chunk.model_evals / (chunk.model_evals + chunk.skipped_evals)  # share of stack passes run
            flops = chunk_flops(model.cfg, mode.split("+")[0], frames_before, chunk.frames.shape[2], pipe.steps,
                                batch * state.conditioning.groups, evaluated)
            rows[mode].append({"chunk": index, "seconds": seconds, "flops": flops})
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
    p.add_argument("--label", type=int, default=0, help="class label (-1: none, one guidance branch)")
    p.add_argument("--batch", type=int, default=1, help="videos generated together (rows per pass)")
    p.add_argument("--repeats", type=int, default=2, help="runs per mode; each chunk's fastest time is kept")
    p.add_argument("--teacache-thresh", type=float, nargs="*", default=[0.2, 0.3, 0.5],
                   help="also run kv + TeaCache at these thresholds (none: skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="outputs/bench")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    modes = list(MODES) + [teacache_mode(t) for t in args.teacache_thresh]
    runs = [measure(model, meta, modes, args.chunks, args.seed, args.batch,
                    None if args.label < 0 else args.label) for _ in range(args.repeats)]
    # per chunk, the fastest of the repeats: timings on shared machines are noisy
    results = {mode: [min(rows, key=lambda r: r["seconds"]) for rows in zip(*(run[mode] for run in runs))]
               for mode in modes}
    last, fifth = args.chunks - 1, min(4, args.chunks - 1)
    print(f"{'chunk':>5} " + " ".join(f"{m + ' s':>20} {'GFLOP':>7}" for m in results))
    for i in range(args.chunks):
        print(f"{i + 1:5d} " + " ".join(f"{rows[i]['seconds']:20.3f} {rows[i]['flops'] / 1e9:7.1f}"
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
    for threshold in args.teacache_thresh:
        mode = teacache_mode(threshold)
        summary[f"speedup_{mode}_over_none"] = total["none"] / total[mode]
        summary[f"flop_ratio_none_over_{mode}"] = flops["none"] / flops[mode]
    for key, value in summary.items():
        print(f"{key:40} {value:6.2f}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ar_scaling.json").write_text(json.dumps(
        {"checkpoint": args.checkpoint, "device": str(device), "chunks": args.chunks, "batch": args.batch,
         "repeats": args.repeats,
         "torch_threads": torch.get_num_threads(), "summary": summary, "per_chunk": results}, indent=2) + "\n")
    drawn = plot_or_skip(plot, results, path=out / "ar_scaling.png")
    print(f"wrote {out / 'ar_scaling.json'}" + (f" and {out / 'ar_scaling.png'}" if drawn else ""))


if __name__ == "__main__":
    main()
