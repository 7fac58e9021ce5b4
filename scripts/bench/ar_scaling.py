"""Cost of autoregressive generation vs length: shared KV cache against the two recompute baselines.

    python scripts/bench/ar_scaling.py                 # shipped checkpoint, 20 chunks, CPU
    python scripts/bench/ar_scaling.py --chunks 20 --compile --teacache-thresh   # + compiled kv, CPU
    python scripts/bench/ar_scaling.py --preset ca2vdm-xl --device cuda --dtype bf16 --frames 80 --steps 100

Modes, same model weights, seed and noise:
  (a) kv    KV cache shared across denoising steps and chunks (Ca2-VDM)
  (b) none  no cache: the conditioning window is recomputed at every denoising step (fixed window; OS-Fix)
  (c) full  no cache: all previous frames are recomputed at every step (extendable context, quadratic; OS-Ext)
  kv+teacache@T  (a) with TeaCache step skipping at threshold T (--teacache-thresh, several allowed; FLOPs count
                 the denoising passes actually run and every commit pass)
  M+compile      with --compile: mode M (--compile-modes) with its blocks compiled (ca2vdm/sampling/compile.py);
                 the compile seconds (a warm-up video before the timed chunks) are reported apart
The modes run in lockstep (ca2vdm/evaluation/lockstep.py): chunk i of every mode is timed before chunk i + 1 of any
(in an order that rotates with i), so a machine that speeds up or slows down over minutes shifts all modes alike and
the ratios stay comparable. Each chunk keeps the fastest of --repeats runs. --frames N: the chunks that generate N
frames after the first frame. With --preset instead of a checkpoint the weights are random (timing and memory only;
said in the output).

Reported besides seconds per chunk and in total: memory (weights, the KV cache, the peak: CUDA's
max_memory_allocated of a kv-only video; on the CPU the process's peak RSS), and the model FLOP utilisation of the
cached denoising pass (ca2vdm/models/flops.py: analytic FLOPs of the kv chunks with a full window / their seconds / the
device's dense peak, from --peak-tflops or the table of known GPUs). Writes ar_scaling.json, then ar_scaling.png
(skipped with a message without matplotlib).
"""
import resource
import statistics
from pathlib import Path

import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.weights import load_model
from ca2vdm.cli.args import count, new_parser, number, seed
from ca2vdm.config import MODEL_CONFIGS, SamplerSettings, model_config
from ca2vdm.config.options import Declared, declared_fields
from ca2vdm.config.sampler import TEACACHE_THRESH
from ca2vdm.evaluation.lockstep import MODES, measure_modes, teacache_mode
from ca2vdm.io.paths import DEFAULT_CHECKPOINT
from ca2vdm.io.plotting import plot_or_skip
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.models.flops import mfu, peak_tflops
from ca2vdm.models.registry import build_model
from ca2vdm.runtime.device import DTYPES, dtype_name, resolve_device, resolve_dtype
from ca2vdm.sampling.compile import warm_up_chunks
from ca2vdm.sampling.pipeline import LongVideoPipeline

PEAK_TFLOPS = Declared(float, "a device's dense peak TFLOP/s", low=0, low_open=True, high=10 ** 6)


def memory(model, meta, batch: int, label: int | None) -> dict:
    """Weights and KV cache (MB) and the peak: on CUDA the most allocated while a kv video fills its window (one
    step per chunk: the peak does not depend on the number of steps), on the CPU the process's peak RSS so far."""
    pipe = LongVideoPipeline.for_checkpoint(model, meta, cache="kv", steps=1)
    mb = {"weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20}
    if model.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(model.device)
    state = pipe.start(batch=batch, seed=0, label=label)
    for _ in range(warm_up_chunks(model)):
        pipe.next_chunk(state)
    mb["kv_cache_mb"] = state.conditioning.cache.nbytes() / 2 ** 20
    if model.device.type == "cuda":
        mb["peak_mb"], mb["peak_of"] = torch.cuda.max_memory_allocated(model.device) / 2 ** 20, "kv video (CUDA)"
    else:
        mb["peak_mb"], mb["peak_of"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process RSS"
    return mb


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt  # called through plot_or_skip: matplotlib is there, with the Agg backend

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
    print(f"wrote {path}")


def build(args, device: torch.device, dtype: torch.dtype) -> tuple[CausalVideoModel, CheckpointMetadata, str]:
    """The model (weights in ``dtype`` on ``device``), its metadata, and where its weights came from."""
    if args.preset:
        with torch.device(device):
            model = build_model(model_config(args.preset))
        meta = CheckpointMetadata(model.cfg)  # nothing recorded: the library's sampler settings
        return model.to(dtype).eval(), meta, f"random (preset {args.preset}, no checkpoint: timing and memory only)"
    model, meta = load_model(args.checkpoint, device)
    return model.to(dtype), meta, f"checkpoint {args.checkpoint}"


def summarise(results: dict, chunks: int, cfg, peak: float | None, compile_seconds: dict[str, list]) -> dict:
    """Ratios of total time and FLOPs between the modes, the same per chunk once the window is full (medians: less
    sensitive to a busy machine), the compile speed-ups and seconds (per repeat: the first compiles, later ones reuse
    the process's graphs) and the kv pass's MFU."""
    total = {m: sum(r["seconds"] for r in rows) for m, rows in results.items()}
    flops = {m: sum(r["flops"] for r in rows) for m, rows in results.items()}
    summary = {"seconds_total": total}
    full_window = [i for i, r in enumerate(results["kv"]) if r["frames_before"] >= cfg.max_context_frames]

    def per_chunk(slow: str, fast: str, key: str = "seconds") -> float | None:
        ratios = [results[slow][i][key] / results[fast][i][key] for i in full_window]
        return statistics.median(ratios) if ratios else None

    for mode in ("none", "full"):
        if mode in results:
            summary[f"speedup_kv_over_{mode}"] = total[mode] / total["kv"]
            summary[f"flop_ratio_{mode}_over_kv"] = flops[mode] / flops["kv"]
    if "none" in results:
        summary["speedup_kv_over_none_per_full_window_chunk"] = per_chunk("none", "kv")
        summary["flop_ratio_none_over_kv_per_full_window_chunk"] = per_chunk("none", "kv", "flops")
    last, fifth = chunks - 1, min(4, chunks - 1)
    summary["kv_last_chunk_over_fifth"] = results["kv"][last]["seconds"] / results["kv"][fifth]["seconds"]
    if chunks >= 12:  # the same question, less sensitive to one slow chunk: last 5 vs chunks 3-7 (medians)
        summary["kv_last5_over_chunks3to7_median"] = (statistics.median(r["seconds"] for r in results["kv"][-5:])
                                                      / statistics.median(r["seconds"] for r in results["kv"][2:7]))
    for mode, rows in results.items():
        if "+teacache@" in mode:
            summary[f"speedup_{mode}_over_none"] = total["none"] / total[mode]
            summary[f"flop_ratio_none_over_{mode}"] = flops["none"] / flops[mode]
        if mode.endswith("+compile"):
            eager = mode[:-len("+compile")]
            summary[f"compile_seconds_{eager}"] = compile_seconds[mode][0]
            summary[f"compile_seconds_{eager}_per_repeat"] = compile_seconds[mode]
            summary[f"speedup_{eager}_compiled_per_full_window_chunk"] = per_chunk(eager, mode)
    if "none+compile" in results:
        summary["speedup_kv_over_none_compiled"] = total["none+compile"] / total["kv+compile"]
        summary["speedup_kv_over_none_compiled_per_full_window_chunk"] = per_chunk("none+compile", "kv+compile")
    for mode in ("kv", "kv+compile"):
        if mode in results and full_window:
            rows = [results[mode][i] for i in full_window]
            summary[f"mfu_{mode}_full_window"] = mfu(sum(r["flops"] for r in rows), sum(r["seconds"] for r in rows),
                                                     peak)
    return summary


def main(argv=None) -> None:
    p = new_parser(__doc__)
    p.add_input("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="weights file or training checkpoint folder")
    p.add_argument("--preset", choices=sorted(MODEL_CONFIGS), default=None,
                   help="a registered model with random weights instead of --checkpoint (timing and memory only)")
    p.add_argument("--chunks", type=count(1), default=20, help="chunks per mode (--frames overrides)")
    p.add_argument("--frames", type=count(1), default=None,
                   help="generate this many frames after the first (sets --chunks)")
    p.add_argument("--steps", type=number(declared_fields(SamplerSettings)["steps"]), default=None,
                   help="denoising steps per chunk (default: the checkpoint's)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the sampling noise (the same for every mode)")
    p.add_argument("--label", type=count(-1), default=0, help="class label (-1: none, one guidance branch); "
                                                        "ignored by an unconditional model")
    p.add_argument("--batch", type=count(1, 4096), default=1, help="videos generated together (rows per pass)")
    p.add_argument("--repeats", type=count(1, 1000), default=2, help="runs per mode; each chunk's fastest time is kept")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="kv: shared KV cache; none: window recompute (OS-Fix); full: all frames (OS-Ext)")
    p.add_argument("--teacache-thresh", type=number(TEACACHE_THRESH), nargs="*", default=[0.2, 0.3, 0.5],
                   help="also run kv + TeaCache at these thresholds (none: skip)")
    p.add_argument("--compile", action="store_true", help="also run the --compile-modes with compiled blocks")
    p.add_argument("--compile-modes", nargs="+", choices=MODES, default=["kv"],
                   help="with --compile: the modes also timed compiled")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (aot_eager: the same graphs without code generation, for dry runs)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--peak-tflops", type=number(PEAK_TFLOPS), default=None,
                   help="the device's dense peak TFLOP/s at --dtype for MFU (default: a table of known GPUs)")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for ar_scaling.json (and the plot)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    check_results_path(out / "ar_scaling.json", [] if args.preset else [args.checkpoint])  # before the measurement
    torch.set_grad_enabled(False)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, meta, weights = build(args, device, dtype)
    print(f"weights: {weights}; {device}, {dtype_name(dtype)}")
    cfg = model.cfg
    chunks = args.chunks if args.frames is None else -(-args.frames // cfg.chunk_frames)
    label = None if args.label < 0 or model.null_label is None else args.label
    modes = [m for m in MODES if m in args.modes] + [teacache_mode(t) for t in args.teacache_thresh]
    modes += [f"{m}+compile" for m in args.compile_modes] if args.compile else []
    if "kv" not in modes:
        p.error("--modes must include kv (every ratio is against it)")
    runs = [measure_modes(model, meta, modes, chunks, args.seed, args.batch, label, args.steps, args.compile_backend)
            for _ in range(args.repeats)]
    # per chunk, the fastest of the repeats: timings on shared machines are noisy
    results = {mode: [min(rows, key=lambda r: r["seconds"]) for rows in zip(*(run[mode] for run in runs))]
               for mode in modes}
    print(f"{'chunk':>5} " + " ".join(f"{m + ' s':>20} {'GFLOP':>7}" for m in results))
    for i in range(chunks):
        print(f"{i + 1:5d} " + " ".join(f"{rows[i]['seconds']:20.3f} {rows[i]['flops'] / 1e9:7.1f}"
                                        for rows in results.values()))
    peak, peak_source = peak_tflops(device, dtype, args.peak_tflops)
    compile_seconds = {m: [run[m][0].get("compile_seconds") for run in runs] for m in modes if m.endswith("+compile")}
    summary = summarise(results, chunks, cfg, peak, compile_seconds)
    summary.update(memory(model, meta, args.batch, label))
    for key, value in summary.items():
        print(f"{key:48} {value}" if not isinstance(value, float) else f"{key:48} {value:8.3f}")
    write_results(out / "ar_scaling.json", {
        "weights": weights, "checkpoint": None if args.preset else args.checkpoint, "preset": args.preset,
         "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
         "dtype": dtype_name(dtype), "chunks": chunks, "frames": args.frames, "steps": args.steps, "batch": args.batch,
         "repeats": args.repeats, "peak_tflops": peak, "peak_tflops_source": peak_source,
         "torch_threads": torch.get_num_threads(), "summary": summary, "per_chunk": results},
        [] if args.preset else [args.checkpoint])
    drawn = plot_or_skip(plot, results, path=out / "ar_scaling.png")
    print(f"wrote {out / 'ar_scaling.json'}" + (f" and {out / 'ar_scaling.png'}" if drawn else ""))


if __name__ == "__main__":
    main()
