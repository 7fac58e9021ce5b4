"""Summarise a scripts/gpu_check.sh run: OUTDIR/summary.json and OUTDIR/summary.md from the steps' JSON and logs.

    python scripts/gpu_report.py OUTDIR [--dry-run]

Reads OUTDIR/steps.tsv (each step's exit status and seconds), cuda_tests.xml (pytest's junit XML, with the SDPA
operators the kernel test recorded), xl/ar_scaling.json, compile/ar_scaling.json, train_mfu.json, wan_memory.json,
wan_vae.json and wan_fps.json; a missing file is reported as such. Checks the issue's GPU goals (not in a dry run,
whose tiny CPU figures say nothing about them). On a GPU the CUDA tests count as failed unless at least one of them
ran (pytest exits 0 when all are skipped).
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from ca2vdm.cli.args import new_parser

BUDGET_SECONDS = 11 * 60
GOALS = {  # name: (path in the summary, comparison, bound)
    "XL, 80 frames, 100 steps, kv, total seconds <= 10": (("xl", "seconds_total", "kv"), "<=", 10.0),
    "cached pass MFU >= 40 % of the bf16 peak": (("xl", "mfu_kv_full_window"), ">=", 0.40),
    "kv over OS-Ext (full) >= 2.5x": (("xl", "speedup_kv_over_full"), ">=", 2.5),
    "KV cache <= 1 GB": (("xl", "kv_cache_mb"), "<=", 1024.0),
    "Wan 1.3B, 480x832, kv: frames/s >= Self-Forcing's 17": (("wan_fps", "modes", "kv", "fps"), ">=", 17.0),
}


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def cuda_tests(path: Path) -> dict | None:
    """Counts of the junit XML and the properties the tests recorded."""
    if not path.exists():
        return None
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    return {**counts, "properties": props}


def dig(data: dict, path: tuple) -> object:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def main(argv=None) -> int:
    p = new_parser(__doc__)
    p.add_input("outdir", help="the folder scripts/gpu_check.sh wrote its JSON into")
    p.add_argument("--dry-run", action="store_true", help="a CPU dry run: report the figures, judge no GPU goal")
    args = p.parse_args(argv)
    out = Path(args.outdir)
    steps = [dict(zip(("name", "exit", "seconds"), line.split("\t"))) for line in
             (out / "steps.tsv").read_text().splitlines()] if (out / "steps.tsv").exists() else []
    for s in steps:
        s["exit"], s["seconds"] = int(s["exit"]), int(s["seconds"])
    xl, comp, train, wan_memory, wan_vae, wan_fps = (load_json(out / f) for f in (
        "xl/ar_scaling.json", "compile/ar_scaling.json", "train_mfu.json", "wan_memory.json", "wan_vae.json",
        "wan_fps.json"))
    summary = {"dry_run": args.dry_run, "steps": steps, "seconds": sum(s["seconds"] for s in steps),
               "budget_seconds": BUDGET_SECONDS, "cuda_tests": cuda_tests(out / "cuda_tests.xml"),
               "xl": xl and {**xl["summary"], "weights": xl["weights"], "device_name": xl["device_name"],
                             "dtype": xl["dtype"], "chunks": xl["chunks"], "steps": xl["steps"]},
               "compile": comp and {k: v for k, v in comp["summary"].items() if "compile" in k},
               "train": train and {"preset": train["preset"], "batch": train["batch"], "dtype": train["dtype"],
                                   **{m: r for m, r in train["modes"].items()}},
               "wan_memory": wan_memory and {f"{r['size']} {r['dtype']}": r["peak_gib"] for r in wan_memory["rows"]},
               "wan_vae": wan_vae and {k: v for k, v in wan_vae.items() if k not in ("seconds", "pixel_frames")},
               "wan_fps": wan_fps and {**{k: v for k, v in wan_fps.items() if k != "modes"}, "modes": {
                   m: {k: v for k, v in r.items() if k not in ("seconds_per_chunk", "pixel_frames")}
                   for m, r in wan_fps["modes"].items()}}}
    goals = {}
    for name, (path, op, bound) in GOALS.items():
        value = dig(summary, path)
        met = None if args.dry_run or value is None else (value <= bound if op == "<=" else value >= bound)
        goals[name] = {"value": value, "met": met}
    summary["goals"] = goals
    failed = [s["name"] for s in steps if s["exit"] != 0]
    ran = summary["cuda_tests"] and summary["cuda_tests"]["tests"] - summary["cuda_tests"]["skipped"]
    if not args.dry_run and "cuda_tests" not in failed and not ran:  # pytest exits 0 when every test is skipped
        failed.append("cuda_tests")
        summary["cuda_tests_problem"] = "no CUDA test ran (every one was skipped, or none was collected)"
    summary["failed_steps"] = failed
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    dry = " (dry run: tiny preset on the CPU, figures say nothing about a GPU)" if args.dry_run else ""
    lines = [f"# GPU check{dry}",
             "", f"{len(steps)} steps in {summary['seconds']} s (budget {BUDGET_SECONDS} s); failed: "
             f"{', '.join(failed) or 'none'}", "", "| step | exit | seconds |", "| --- | --- | --- |"]
    lines += [f"| {s['name']} | {s['exit']} | {s['seconds']} |" for s in steps]
    tests = summary["cuda_tests"]
    lines += ["", "## CUDA tests", "", "missing" if tests is None else
              f"{tests['tests']} tests, {tests['failures']} failures, {tests['errors']} errors, {tests['skipped']} "
              f"skipped; SDPA operators on cached passes: {tests['properties'].get('sdpa_operators', 'not recorded')}"]
    if xl:
        s = summary["xl"]
        lines += ["", f"## XL benchmark ({s['weights']}; {s['device_name']}, {s['dtype']}, {s['chunks']} chunks)", "",
                  "| mode | seconds |", "| --- | --- |"]
        lines += [f"| {m} | {v:.2f} |" for m, v in s["seconds_total"].items()]
        lines += ["", *(f"- {k}: {s.get(k)}" for k in ("speedup_kv_over_none", "speedup_kv_over_full",
                                                        "flop_ratio_full_over_kv", "mfu_kv_full_window",
                                                        "weights_mb", "kv_cache_mb", "peak_mb"))]
    lines += ["", "## Compile", "", "missing" if comp is None else
              "\n".join(f"- {k}: {v}" for k, v in summary["compile"].items())]
    lines += ["", "## Training", "", "missing" if train is None else "\n".join(
        f"- {m}: {r['steps_per_second']:.2f} steps/s, MFU {r['mfu']}, peak {r['peak_mb']} MB"
        for m, r in train["modes"].items())]
    lines += ["", "## Wan", "", "memory estimate missing" if wan_memory is None else "\n".join(
        f"- estimated peak, {name}: {p['text_encoder_offloaded']} GiB with UMT5 offloaded, "
        f"{p['text_encoder_resident']} GiB resident" for name, p in summary["wan_memory"].items())]
    v = summary["wan_vae"]
    lines += ["VAE benchmark missing" if v is None else
              f"- VAE ({v['vae']}, {v['size']}, {v['dtype']}, {v['device_name']}): {v['seconds_per_chunk']:.3f} s per "
              f"chunk, {v['pixel_frames_per_second']:.1f} frames/s, peak {v['peak_mb']} MB, feature cache "
              f"{v['feature_cache_mb'][0]:.1f} -> {v['feature_cache_mb'][-1]:.1f} MiB, streamed vs whole "
              f"{v['streamed_vs_whole_max_abs']:.2e}"]
    f = summary["wan_fps"]
    lines += ["end-to-end benchmark missing" if f is None else
              f"- end to end ({f['model']}, {f['size']}, {f['dtype']}, {f['device_name']}, {f['steps']} steps, an "
              f"{f['chunks']}-chunk video; compile {f['compile_seconds']} s):"]
    lines += [] if f is None else [
        f"  - {m}: {r['fps']:.2f} frames/s, first frame after {r['time_to_first_frame_s']:.2f} s, peak "
        f"{r['peak_mb']:.0f} MiB" for m, r in f["modes"].items()]
    verdicts = {True: "met", False: "missed", None: "n/a (dry run)" if args.dry_run else "no figure"}
    lines += ["", "## Goals", ""] + [f"- {name}: {g['value']} -> {verdicts[g['met']]}" for name, g in goals.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
