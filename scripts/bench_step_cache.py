"""Step-caching policies head to head on one checkpoint: evaluations, speed-up and quality vs the full video.

    python scripts/bench_step_cache.py                      # shipped checkpoint, 20 chunks
    python scripts/bench_step_cache.py --chunks 5 --out-dir /tmp/bench

For every policy setting the same video (seed, label) is generated; block-stack evaluations and wall time are
compared with the run without a policy, and PSNR / SSIM with its frames. Because a chunk conditions on the ones
before, a small error early moves the whole rest of the video; ``chunk PSNR`` therefore also reports each chunk
sampled from the reference's own context (capped at 100 dB), the error of the step cache itself. Writes
``step_cache.json`` and ``step_cache.png`` (speed-up vs PSNR) to ``--out-dir`` and prints a table.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca2vdm.checkpoint import load_model  # noqa: E402
from ca2vdm.generate import DEFAULT_CHECKPOINT  # noqa: E402
from ca2vdm.metrics import psnr, ssim  # noqa: E402
from ca2vdm.pipeline import LongVideoPipeline  # noqa: E402
from ca2vdm.plotting import plot_or_skip  # noqa: E402
from ca2vdm.step_cache import AdaCache, FasterCache, TeaCache  # noqa: E402
from ca2vdm.step_cache.teacache import IDENTITY  # noqa: E402


def settings(coefficients) -> list[tuple[str, str, object]]:
    """(policy, setting, factory) for every configuration compared."""
    rows = [("none", "-", lambda: None)]
    rows += [("teacache", f"thresh={t}", lambda t=t: TeaCache(t, coefficients)) for t in (0.05, 0.1, 0.2, 0.3, 0.5)]
    rows += [("fastercache", f"cfg_every={k}", lambda k=k: FasterCache(cfg_every=k)) for k in (2, 3, 5)]
    rows += [("adacache", "default codebook", lambda: AdaCache()),
             ("adacache", "aggressive", lambda: AdaCache(codebook=((0.1, 4), (0.2, 3), (0.4, 2),
                                                                  (float("inf"), 1))))]
    return rows


def run(model, meta, policy, args) -> tuple[torch.Tensor, int, int, float]:
    pipe = LongVideoPipeline.from_metadata(model, meta, step_cache=policy)
    tic = time.perf_counter()
    chunks = list(pipe.generate(args.chunks, label=args.label, seed=args.seed))
    seconds = time.perf_counter() - tic
    model.disable_cache()
    video = torch.cat([c.frames for c in chunks], dim=2)[0]  # (C, T, H, W)
    return video, sum(c.model_evals for c in chunks), sum(c.skipped_evals for c in chunks), seconds


def shared_context_psnr(model, meta, policy, args) -> float:
    """Mean per-chunk PSNR when every chunk is sampled from the reference video's context (teacher forcing): the
    step cache's own error, without the divergence that autoregression compounds."""
    reference_model = copy.deepcopy(model)
    reference = LongVideoPipeline.from_metadata(reference_model, meta)
    cached = LongVideoPipeline.from_metadata(model, meta, step_cache=policy)
    ref_state, state = reference.start(label=args.label, seed=args.seed), cached.start(label=args.label, seed=args.seed)
    scores = []
    for _ in range(args.chunks):
        truth = reference.next_chunk(ref_state).frames
        scores.append(psnr(cached.next_chunk(state, commit_frames=truth).frames, truth))
    model.disable_cache()
    return sum(min(s, 100.0) for s in scores) / len(scores)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, key, title in ((axes[0], "psnr", "whole video vs full (free-running)"),
                           (axes[1], "chunk_psnr_shared_context", "per chunk, shared context")):
        for policy in dict.fromkeys(r["policy"] for r in rows if r["policy"] != "none"):
            pts = [r for r in rows if r["policy"] == policy]
            ax.plot([r["speedup"] for r in pts], [min(r[key], 60) for r in pts], "o-", label=policy)
        ax.axhline(30, color="gray", lw=0.8, ls="--")
        ax.set(xlabel="wall-clock speed-up vs no policy (x)", ylabel="PSNR (dB, capped at 60)", title=title)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, default=0, help="class label; guidance (and so FasterCache) needs one")
    p.add_argument("--out-dir", default="outputs/bench")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model, meta = load_model(args.checkpoint)
    coefficients = meta.get("teacache_coefficients") or IDENTITY
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run(model, meta, None, argparse.Namespace(**{**vars(args), "chunks": 1}))  # warm-up, not timed
    rows, reference = [], None
    print(f"{'policy':12} {'setting':18} {'evals':>6} {'skipped':>7} {'evals x':>7} {'speed x':>7} {'PSNR':>6} "
          f"{'SSIM':>6} {'chunk PSNR':>10}")
    for policy, setting, factory in settings(coefficients):
        video, evals, skipped, seconds = run(model, meta, factory(), args)
        if reference is None:
            reference = (video, evals, seconds)
        row = {"policy": policy, "setting": setting, "model_evals": evals, "skipped_evals": skipped,
               "seconds": seconds, "eval_ratio": reference[1] / evals, "speedup": reference[2] / seconds,
               "psnr": psnr(video, reference[0]), "ssim": ssim(video, reference[0]),
               "chunk_psnr_shared_context": shared_context_psnr(model, meta, factory(), args)}
        rows.append(row)
        print(f"{policy:12} {setting:18} {evals:6d} {skipped:7d} {row['eval_ratio']:7.2f} {row['speedup']:7.2f} "
              f"{row['psnr']:6.1f} {row['ssim']:6.3f} {row['chunk_psnr_shared_context']:10.1f}", flush=True)
    result = {"checkpoint": args.checkpoint, "chunks": args.chunks, "seed": args.seed, "label": args.label,
              "teacache_coefficients": coefficients, "torch_threads": torch.get_num_threads(), "rows": rows}
    (out_dir / "step_cache.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    drawn = plot_or_skip(plot, rows, path=out_dir / "step_cache.png")
    print(f"wrote {out_dir / 'step_cache.json'}" + (f" and {out_dir / 'step_cache.png'}" if drawn else ""))


if __name__ == "__main__":
    main()
