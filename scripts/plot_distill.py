"""Plot distillation runs' losses (their metrics.jsonl): the student's (ODE regression, then DMD) and the critic's.

    python scripts/plot_distill.py runs/distill-demo/metrics.jsonl runs/distill-demo-reg/metrics.jsonl \
        --offsets 0 300 --out docs/images/distill_losses.png
"""
import json
from pathlib import Path

from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.plotting import plot_or_skip


def draw(runs: list[tuple[str, int, list[dict]]], path: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in ((axes[0], "loss_model", "student: ODE regression, then DMD (its update steps)"),
                           (axes[1], "loss_critic", "critic: flow matching on the student's samples")):
        for name, offset, rows in runs:
            points = [(r["step"] + offset, r[key]) for r in rows if key in r]
            ax.plot([s for s, _ in points], [v for _, v in points], lw=1, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("metrics", nargs="+", help="distillation runs' metrics.jsonl files (one curve each)")
    p.add_argument("--offsets", type=count(0), nargs="*", default=[], help="steps added to each run's (a run that "
                   "started from another's checkpoint)")
    p.add_output("--out", default="docs/images/distill_losses.png", help="the PNG to write")
    args = p.parse_args()
    offsets = args.offsets + [0] * (len(args.metrics) - len(args.offsets))
    runs = [(Path(m).parent.name, offset, [json.loads(line) for line in Path(m).read_text().splitlines()
                                           if line.strip()]) for m, offset in zip(args.metrics, offsets)]
    if plot_or_skip(draw, runs, path=args.out):
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
