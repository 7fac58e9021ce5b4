"""Step-caching policies head to head on one checkpoint: evaluations saved, speed-up and per-chunk quality.

    OMP_NUM_THREADS=1 python scripts/bench/step_cache.py --chunks 9 --out-dir outputs/bench
    OMP_NUM_THREADS=1 python scripts/bench/step_cache.py --chunks 9 --drift-chunks 200   # + free-running drift

Every policy setting samples the same chunks (model, seed, label) **teacher-forced**: each chunk is denoised from
the reference video's own context and noise (the reference: no policy), so its PSNR against the reference chunk is
the error of the step cache itself, not the divergence that autoregression compounds (a free-running video moves
away after 2-3 chunks whatever the policy). Per setting: ``eval_ratio`` = block-stack evaluations (per guidance
branch, commit passes excluded) of the reference / of the setting; ``speedup`` = the reference's wall time of the
denoising (all steps of all chunks) / the setting's, the reference re-run in lockstep (chunk by chunk, alternating)
so that both see the same load from other jobs; ``chunk_speedup`` the same for whole chunks (with the one commit
pass per chunk that writes the KV cache); ``cpu_speedup`` / ``chunk_cpu_speedup`` with process CPU time instead
(immune to other jobs; run with OMP_NUM_THREADS=1 so that it means time); ``chunk_psnr_mean`` / ``chunk_psnr_min``
over the chunks (capped at 100 dB).

``--drift-chunks N`` also generates an N-chunk free-running video without a policy and with each policy's best
setting (the most evaluations saved at mean chunk PSNR >= 35 dB and worst chunk >= 30 dB: ``--goal-psnr``) and
compares the statistics (brightness, contrast, sharpness, motion) of its last 50 chunks against its first 10
(``--drift-last``, ``--drift-first``), policy on vs off;
as the yardstick of how much two rollouts differ anyway, the same for the video without a policy at the next seed.
``--drift-seeds N`` repeats that for N seeds from ``--seed`` (``drift.seeds``: each seed's statistics, policy on and
off; ``drift.summary``: per statistic, on / off per seed with its mean, and the policy-free ratios per seed with their
spread, max / min, as the yardstick); ``--settings`` restricts the table (and so the drift) to named settings:

    OMP_NUM_THREADS=1 python scripts/bench/step_cache.py --chunks 9 --policies taylorseer \
        --settings interval=2,growth=1,cfg_reuse=1 --drift-chunks 200 --drift-seeds 4

Writes ``step_cache.json`` (after every setting, so an interrupted run keeps what it measured), then
``step_cache.png`` (speed-up and evaluations saved vs mean chunk PSNR, one curve per policy; skipped with a
message without matplotlib), and prints a table.
"""
import copy
import time
from pathlib import Path

import torch

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.cli.args import count, new_parser, number
from ca2vdm.cli.args import seed as seed_arg
from ca2vdm.config.options import Declared
from ca2vdm.evaluation.metrics import motion, psnr, sharpness, to_frames
from ca2vdm.io.paths import DEFAULT_CHECKPOINT
from ca2vdm.io.plotting import plot_or_skip
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import AdaCache, build_step_cache

GOAL_MEAN, GOAL_MIN = 35.0, 30.0  # dB: mean and worst chunk PSNR a setting must keep to count as "good" (--goal-psnr)
DRIFT_FIRST, DRIFT_LAST = 10, 50  # chunks compared by --drift-chunks (--drift-first, --drift-last)
PSNR_GOAL = Declared(float, "a PSNR goal in dB (any value below 0: every setting counts)", low=-1000, high=1000)


def settings() -> list[tuple[str, str, dict]]:
    """(policy, setting label, options for build_step_cache) of every configuration compared."""
    rows = [("none", "-", {})]
    rows += [("teacache", f"threshold={t}", {"threshold": t}) for t in (0.1, 0.2, 0.3, 0.5)]
    rows += [("fastercache", f"cfg_every={k}", {"cfg_every": k}) for k in (2, 3)]
    rows += [("adacache", "default codebook", {}), ("adacache", "aggressive", {"aggressive": True})]
    rows += [("magcache", f"threshold={t}", {"threshold": t}) for t in (0.06, 0.12, 0.25, 0.5)]
    rows += [("magcache", "threshold=0.5,retention=0.1", {"threshold": 0.5, "retention": 0.1})]
    rows += [("taylorseer", f"interval={n},order={m}", {"interval": n, "order": m})
             for n, m in ((2, 1), (3, 1), (4, 1), (5, 1), (4, 2))]
    rows += [("taylorseer", "interval=2,growth=1", {"interval": 2, "growth": 1}),
             ("taylorseer", "interval=2,growth=1,cfg_reuse=1", {"interval": 2, "growth": 1, "cfg_reuse": 1}),
             ("taylorseer", "interval=3,growth=1,cfg_reuse=1", {"interval": 3, "growth": 1, "cfg_reuse": 1})]
    rows += [("chunkcache", f"threshold={t}", {"threshold": t}) for t in (0.7, 1.0, 1.5, 2.5)]
    rows += [("chunkcache", "threshold=1.0,cfg_reuse=0", {"threshold": 1.0, "cfg_reuse": 0})]
    return rows


def make_policy(policy: str, options: dict, meta, checkpoint: str):
    """A fresh policy object (None for ``none``)."""
    if options.get("aggressive"):
        return AdaCache(codebook=((0.1, 4), (0.2, 3), (0.4, 2), (float("inf"), 1)))
    return build_step_cache(policy, options, meta.calibration, checkpoint)


def timed_chunk(pipe: LongVideoPipeline, state, commit: torch.Tensor | None) -> tuple:
    """One chunk; (result, [denoising wall s, whole chunk wall s, denoising CPU s, whole chunk CPU s]). The
    denoising ends at the last step's velocity; the whole chunk adds the Euler update and the commit pass."""
    marks = []
    tic, cpu = time.perf_counter(), time.process_time()
    result = pipe.next_chunk(state, on_step=lambda i: marks.append((time.perf_counter(), time.process_time())),
                             commit_frames=commit)
    toc, cpu_end = time.perf_counter(), time.process_time()
    return result, [marks[-1][0] - tic, toc - tic, marks[-1][1] - cpu, cpu_end - cpu]


def free_running(model, meta, policy, chunks: int, label, seed: int) -> list[torch.Tensor]:
    """The frames of a free-running video, chunk by chunk."""
    pipe = LongVideoPipeline.for_checkpoint(model, meta, policy=policy)
    return [c.frames for c in pipe.generate(chunks, label=label, seed=seed)]


def lockstep(model, reference_model, meta, policy, truth: list[torch.Tensor], label, seed: int) -> dict:
    """The policy's chunks, each committing the reference's chunk (teacher forcing), timed in lockstep with the
    reference (no policy, on its own copy of the model) re-run chunk by chunk, so both see the same load."""
    reference = LongVideoPipeline.for_checkpoint(reference_model, meta)
    cached = LongVideoPipeline.for_checkpoint(model, meta, policy=policy)
    ref_state, state = reference.start(label=label, seed=seed), cached.start(label=label, seed=seed)
    out = {"frames": [], "times": [], "ref_times": [], "evals": 0, "skipped": 0, "ref_evals": 0}
    for commit in truth:
        ref_result, ref_times = timed_chunk(reference, ref_state, None)
        result, times = timed_chunk(cached, state, commit)
        out["frames"].append(result.frames)
        out["times"].append(times)
        out["ref_times"].append(ref_times)
        out["evals"] += result.model_evals
        out["skipped"] += result.skipped_evals
        out["ref_evals"] += ref_result.model_evals
    return out


def ratio(run: dict, column: int) -> float:
    """Reference time / policy time summed over the chunks, for one timing column of :func:`timed_chunk`."""
    return sum(t[column] for t in run["ref_times"]) / sum(t[column] for t in run["times"])


def video_stats(frames: list[torch.Tensor], first: int, last: int) -> dict:
    """Brightness, contrast, sharpness and motion of the last ``last`` chunks relative to the first ``first``
    full-length chunks of a free-running video (frames: (B, C, L, H, W) per chunk)."""
    chunks = [f[0] for f in frames if f.shape[2] == max(g.shape[2] for g in frames)]  # (C, L, H, W) each

    def stats(group: list[torch.Tensor]) -> dict:
        video = torch.cat(group, dim=1)
        pixels = to_frames(video)
        return {"brightness": pixels.mean().item(), "contrast": pixels.std().item(), "sharpness": sharpness(video),
                "motion": motion(video)}

    head, tail = stats(chunks[:first]), stats(chunks[-last:])
    return {key: tail[key] / head[key] for key in head}


def best_settings(rows: list[dict], goal_mean: float, goal_min: float) -> dict[str, dict]:
    """Per policy, the setting with the most evaluations saved whose mean and worst chunk PSNR meet the goals."""
    best = {}
    for row in rows:
        good = row["chunk_psnr_mean"] >= goal_mean and row["chunk_psnr_min"] >= goal_min
        if row["policy"] != "none" and good and row["eval_ratio"] > best.get(row["policy"], {}).get("eval_ratio", 0):
            best[row["policy"]] = row
    return best


def drift(model, meta, rows: list[dict], options: dict, args, save) -> dict:
    """Free-running ``args.drift_chunks`` chunks without a policy and with each policy's best setting, for the seeds
    ``args.seed`` .. ``args.seed + args.drift_seeds - 1`` (policy-free also at the next seed when there is one seed,
    as the yardstick); ``save(result)`` after every seed, so an interrupted run keeps the seeds it finished."""
    best = best_settings(rows, *args.goal_psnr)
    entries = []
    window = args.drift_first, args.drift_last
    for seed in range(args.seed, args.seed + max(args.drift_seeds, 2)):
        entry = {"seed": seed,
                 "off": video_stats(free_running(model, meta, None, args.drift_chunks, args.label, seed), *window)}
        for policy, row in best.items() if seed < args.seed + args.drift_seeds else ():
            made = make_policy(policy, options[(policy, row["setting"])], meta, args.checkpoint)
            stats = video_stats(free_running(model, meta, made, args.drift_chunks, args.label, seed), *window)
            entry[policy] = {"setting": row["setting"], "last_vs_first": stats,
                             "vs_off": {k: stats[k] / entry["off"][k] for k in stats}}
            print(f"drift {policy} ({row['setting']}), seed {seed}: last {args.drift_last} vs first {args.drift_first} "
                  "chunks, policy on / off: " + ", ".join(f"{k} {v:.3f}" for k, v in entry[policy]["vs_off"].items()),
                  flush=True)
        entries.append(entry)
        result = drift_summary(entries, list(best))
        save(result)
    if "off_next_seed" in result:
        print(f"drift without a policy, seed {args.seed + 1} / seed {args.seed}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["off_next_seed"]["vs_off"].items()), flush=True)
    return result


def drift_summary(entries: list[dict], policies: list[str]) -> dict:
    """The drift result from the per-seed entries: the first seed's keys as before (``off``, ``off_next_seed``, one
    per policy), ``seeds`` (the entries) and ``summary``: per statistic, the policy-free ratio per seed with its
    spread between seeds (max / min: the yardstick) and, per policy, on / off per seed with the mean over seeds."""
    first = entries[0]
    result = {"off": first["off"], **{policy: first[policy] for policy in policies if policy in first}}
    if len(entries) > 1:
        other = entries[1]["off"]
        result["off_next_seed"] = {"last_vs_first": other, "vs_off": {k: other[k] / first["off"][k] for k in other}}
    summary = {}
    for key in first["off"]:
        off = [e["off"][key] for e in entries]
        summary[key] = {"off": off, "off_spread": max(off) / min(off)}
        for policy in policies:
            on_off = [e[policy]["vs_off"][key] for e in entries if policy in e]
            if on_off:
                summary[key][policy] = {"on_off": on_off, "mean": sum(on_off) / len(on_off)}
    return {**result, "seeds": entries, "summary": summary}


def curve(row: dict) -> str:
    """The plot's curve for a row: its policy; TaylorSeer with our growing intervals apart from the paper's."""
    return row["policy"] + (" (growth)" if "growth=" in row["setting"] else "")


def plot(rows: list[dict], goal_mean: float, path: Path) -> None:
    """Speed-up and evaluations saved against mean chunk PSNR, one curve per policy."""
    if all(r["policy"] == "none" for r in rows):
        print("no policy rows: no plot")
        return
    import matplotlib.pyplot as plt  # called through plot_or_skip: matplotlib is there, with the Agg backend

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "speedup", "wall-clock speed-up vs no policy (x)"),
                           (axes[1], "eval_ratio", "block-stack evaluations saved (x fewer)")):
        for name in dict.fromkeys(curve(r) for r in rows if r["policy"] != "none"):
            pts = sorted((r for r in rows if curve(r) == name), key=lambda r: r[key])
            ax.plot([r[key] for r in pts], [min(r["chunk_psnr_mean"], 60) for r in pts], "o-", label=name)
        ax.axhline(goal_mean, color="gray", lw=0.8, ls="--")
        ax.axvline(3.0 if key == "eval_ratio" else 2.5, color="gray", lw=0.8, ls=":")
        ax.set(xlabel=label, title="teacher-forced chunks vs no policy")
    axes[0].set_ylabel("mean chunk PSNR (dB, capped at 60)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    p = new_parser(__doc__)
    p.add_input("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="weights file or training checkpoint folder")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=9, help="teacher-forced chunks per setting")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the reference video and its noise")
    p.add_argument("--label", type=count(0), default=0, help="class label; guidance (and so FasterCache) needs one")
    p.add_argument("--drift-chunks", type=count(0, 10 ** 5), default=0,
                   help="also compare a free-running video of this many chunks (> --drift-first + --drift-last) with "
                        "each policy's best setting on and off (0: skip; 200 takes long)")
    p.add_argument("--drift-first", type=count(1, 10 ** 5), default=DRIFT_FIRST,
                   help=f"the drift compares the last --drift-last chunks with these first (default {DRIFT_FIRST})")
    p.add_argument("--drift-last", type=count(1, 10 ** 5), default=DRIFT_LAST,
                   help=f"the last chunks of the drift comparison (default {DRIFT_LAST})")
    p.add_argument("--goal-psnr", type=number(PSNR_GOAL), nargs=2, default=[GOAL_MEAN, GOAL_MIN],
                   metavar=("MEAN", "MIN"),
                   help=f"dB a setting's mean and worst chunk PSNR must reach to be a policy's best for the drift "
                        f"(default {GOAL_MEAN:g} {GOAL_MIN:g})")
    p.add_argument("--drift-seeds", type=count(1, 1000), default=1,
                   help="the drift videos for this many seeds from --seed, each with and without the policies")
    p.add_argument("--policies", nargs="*", default=None, help="only these policies (default: all)")
    p.add_argument("--settings", nargs="*", default=None,
                   help="only these settings of the policies, by label, e.g. interval=2,growth=1,cfg_reuse=1")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for step_cache.json (and the plot)")
    args = p.parse_args(argv)
    if args.drift_first < 1 or args.drift_last < 1:
        p.error("--drift-first and --drift-last must be at least 1")
    if args.drift_chunks and args.drift_chunks <= args.drift_first + args.drift_last:
        p.error(f"--drift-chunks must exceed {args.drift_first + args.drift_last} (first {args.drift_first} vs last "
                f"{args.drift_last})")
    if args.drift_seeds < 1:
        p.error("--drift-seeds must be at least 1")
    unknown = set(args.settings or ()) - {setting for _, setting, _ in settings()}
    if unknown:
        p.error(f"--settings: no setting {', '.join(sorted(unknown))}; the labels are those of the table's setting "
                "column, e.g. interval=2,growth=1,cfg_reuse=1 or threshold=1.0")
    out_dir = Path(args.out_dir)
    json_path = check_results_path(out_dir / "step_cache.json", [args.checkpoint])  # before the measurement
    model, meta = load_model(args.checkpoint)
    free_running(model, meta, None, 1, args.label, args.seed)  # warm-up, not timed
    truth = free_running(model, meta, None, args.chunks, args.label, args.seed)
    reference_model = copy.deepcopy(model)
    result = {"checkpoint": args.checkpoint, "chunks": args.chunks, "seed": args.seed, "label": args.label,
              "steps": meta.sampler.steps,
              "torch_threads": torch.get_num_threads(), "rows": []}
    options = {}
    print(f"{'policy':11} {'setting':31} {'evals':>5} {'evals x':>7} {'speed x':>7} {'cpu x':>6} {'chunk x':>7} "
          f"{'PSNR mean':>9} {'PSNR min':>8}")
    for policy, setting, opts in settings():
        if policy != "none" and (args.policies and policy not in args.policies
                                 or args.settings and setting not in args.settings):
            continue
        try:
            made = make_policy(policy, opts, meta, args.checkpoint)
        except ValueError as e:
            print(f"{policy:11} skipped: {e}")
            continue
        options[(policy, setting)] = opts
        run = lockstep(model, reference_model, meta, made, truth, args.label, args.seed)
        scores = [min(psnr(a, b), 100.0) for a, b in zip(run["frames"], truth)]
        row = {"policy": policy, "setting": setting, "model_evals": run["evals"], "skipped_evals": run["skipped"],
               "eval_ratio": run["ref_evals"] / run["evals"], "speedup": ratio(run, 0), "chunk_speedup": ratio(run, 1),
               "cpu_speedup": ratio(run, 2), "chunk_cpu_speedup": ratio(run, 3),
               "chunk_psnr_mean": sum(scores) / len(scores), "chunk_psnr_min": min(scores), "chunk_psnr": scores,
               "seconds": sum(t[1] for t in run["times"])}
        result["rows"].append(row)
        write_results(json_path, result, [args.checkpoint])
        print(f"{policy:11} {setting:31} {run['evals']:5d} {row['eval_ratio']:7.2f} {row['speedup']:7.2f} "
              f"{row['cpu_speedup']:6.2f} {row['chunk_speedup']:7.2f} {row['chunk_psnr_mean']:9.1f} "
              f"{row['chunk_psnr_min']:8.1f}", flush=True)
    if args.drift_chunks:
        def save(found: dict) -> None:
            result["drift"] = {"chunks": args.drift_chunks, **found}
            write_results(json_path, result, [args.checkpoint])

        drift(model, meta, result["rows"], options, args, save)
    print(f"wrote {json_path}")
    plot_or_skip(plot, result["rows"], args.goal_psnr[0], path=out_dir / "step_cache.png")


if __name__ == "__main__":
    main()
