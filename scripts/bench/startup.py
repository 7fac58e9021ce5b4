"""Start-up cost of the command lines: how long ``--help`` takes, and the main command's wall time beyond generation.

    python scripts/bench_startup.py --repeats 5 --out docs/results/startup.json

For every entry point (the scripts ``infer/long_video.py``, ``infer/serve.py``, ``train/train.py``,
``train/train_autoencoder.py`` and their console scripts ``ca2vdm-generate``, ...), the median wall time of
``--help`` over ``--repeats`` fresh interpreters; for the main command (``infer/long_video.py --chunks 20``), the
median of its wall time minus the generation time it reports (``seconds`` in its ``--stats``: the chunks, the mp4
and the contact sheet), which is interpreter start-up, imports and loading the checkpoint. ``python -c "import
torch"`` is measured in the same run as the yardstick: what any command that samples has to pay.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ca2vdm.io.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["infer/long_video.py", "infer/serve.py", "train/train.py", "train/train_autoencoder.py"]
CONSOLE = ["ca2vdm-generate", "ca2vdm-serve", "ca2vdm-train", "ca2vdm-train-autoencoder"]


def wall(argv: list[str]) -> float:
    """Seconds one command takes, end to end; it must succeed."""
    tic = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - tic


def median_wall(argv: list[str], repeats: int) -> float:
    return statistics.median(wall(argv) for _ in range(repeats))


def main_command(repeats: int, chunks: int) -> dict:
    """Median wall time, generation time and their difference of the main command, over ``repeats`` runs."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            stats = Path(tmp) / f"stats{i}.json"
            seconds = wall([sys.executable, "infer/long_video.py", "--chunks", str(chunks), "--preview", "--out",
                            str(Path(tmp) / "v.mp4"), "--overwrite", "--stats", str(stats)])
            generation = json.loads(stats.read_text())["seconds"]
            runs.append({"wall": seconds, "generation": generation, "overhead": seconds - generation})
    return {key: statistics.median(r[key] for r in runs) for key in ("wall", "generation", "overhead")} | {
        "runs": runs}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="fresh interpreters per figure (median; default 5)")
    p.add_argument("--chunks", type=int, default=20, help="chunks of the main command (default 20, the README's)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    result = {"python": sys.version.split()[0], "repeats": args.repeats,
              "import_torch": median_wall([sys.executable, "-c", "import torch"], args.repeats), "help": {}}
    for script in SCRIPTS:
        result["help"][script] = median_wall([sys.executable, script, "--help"], args.repeats)
    bin_dir = Path(sys.executable).parent
    for name in CONSOLE:
        found = shutil.which(name, path=str(bin_dir)) or shutil.which(name)
        result["help"][name] = median_wall([found, "--help"], args.repeats) if found else None
    result["main_command"] = main_command(args.repeats, args.chunks)
    print(f"import torch: {result['import_torch']:.2f} s (the yardstick)")
    for name, seconds in result["help"].items():
        print(f"{name} --help: " + ("not installed" if seconds is None else f"{seconds:.2f} s"))
    m = result["main_command"]
    print(f"main command ({args.chunks} chunks): wall {m['wall']:.2f} s, generation {m['generation']:.2f} s, "
          f"wall minus generation {m['overhead']:.2f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.out), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
