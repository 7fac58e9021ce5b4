"""Training steps per second of one config under different data paths, measured in one run.

    # latent model: videos decoded and encoded every step vs latents encoded once (ca2vdm encode-latents)
    python scripts/bench/train_throughput.py --config configs/latent-demo.yaml \
        --variant videos: --variant latents:data.latents=data/shapes128-latents

Each variant is ``NAME:key=value,key=value`` (overrides of the config). The variants run one after the other,
``--steps`` training steps each in a fresh temporary output directory; the first ``--warmup`` steps are not timed.
Prints steps/s per variant and the ratio to the first, and writes ``<out-dir>/train_throughput.json``.
"""
import json
import statistics
import tempfile
from pathlib import Path

from ca2vdm.cli.args import count, new_parser
from ca2vdm.config import load_config
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.training.loop import train


def steps_per_second(config_path: str, overrides: list[str], steps: int, warmup: int) -> float:
    """Median steps/s over the logged steps after ``warmup`` (one metrics line per step)."""
    with tempfile.TemporaryDirectory() as out:
        config = load_config(config_path, [*overrides, f"train.output_dir={out}", f"train.max_steps={steps}",
                                           "train.log_every=1", f"train.save_every={steps}", "train.sample_every=0"])
        train(config, progress_bar=False)
        rates = [json.loads(line)["steps_per_s"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(rates[warmup:])


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("--config", required=True, help="training config (YAML) every variant starts from")
    p.add_argument("--variant", action="append", required=True, help="NAME:key=value,key=value (repeatable)")
    p.add_argument("--steps", type=count(1, 10 ** 6), default=30, help="training steps per variant, warm-up included")
    p.add_argument("--warmup", type=count(0, 10 ** 6), default=5,
                   help="first steps of each variant left out of the timing")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for the JSON")
    args = p.parse_args()
    out = check_results_path(Path(args.out_dir) / "train_throughput.json", [args.config])
    results = {}
    for spec in args.variant:
        name, _, text = spec.partition(":")
        overrides = [o for o in text.split(",") if o]
        results[name] = {"overrides": overrides,
                         "steps_per_s": steps_per_second(args.config, overrides, args.steps, args.warmup)}
    first = next(iter(results.values()))["steps_per_s"]
    for name, r in results.items():
        r["ratio_to_first"] = r["steps_per_s"] / first
        print(f"{name:12} {r['steps_per_s']:7.3f} steps/s  {r['ratio_to_first']:5.2f}x  {' '.join(r['overrides'])}")
    write_results(out, {"config": args.config, "steps": args.steps, "warmup": args.warmup, "variants": results},
                  [args.config])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
