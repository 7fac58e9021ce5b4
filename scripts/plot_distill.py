"""Plot a distillation run's losses (its metrics.jsonl): the student's (ODE regression, then DMD) and the critic's.

    python scripts/plot_distill.py runs/distill-demo/metrics.jsonl --out docs/images/distill_losses.png
"""
import argparse
import json
from pathlib import Path

from ca2vdm.io.plotting import plot_or_skip


def draw(rows: list[dict], path: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in ((axes[0], "loss_model", "student: ODE regression, then DMD (generator steps)"),
                           (axes[1], "loss_critic", "critic: flow matching on the student's samples")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([s for s, _ in points], [v for _, v in points], lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", help="a distillation run's metrics.jsonl")
    p.add_argument("--out", default="docs/images/distill_losses.png", help="the PNG to write")
    args = p.parse_args()
    rows = [json.loads(line) for line in Path(args.metrics).read_text().splitlines() if line.strip()]
    if plot_or_skip(draw, rows, path=args.out):
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
