"""Start-up cost of the command lines: how long ``--help`` takes, and the main command's wall time beyond generation.

    python scripts/bench/startup.py --repeats 5 --out docs/results/startup.json

For every entry point (the scripts ``infer/long_video.py``, ``infer/serve.py``, ``train/train.py``,
``train/train_autoencoder.py``, their console scripts ``ca2vdm-generate``, ..., and the ``ca2vdm`` command's own
``ca2vdm --help`` and ``ca2vdm generate --help``), the median wall time of ``--help`` over ``--repeats`` fresh
interpreters (``ca2vdm`` through ``python -m ca2vdm.cli.main`` where the console script is not installed:
``ca2vdm_via`` says which); for the main command (``infer/long_video.py --chunks 20``), the
median of its wall time minus the generation time it reports (``seconds`` in its ``--stats``: the chunks, the mp4
and the contact sheet), which is interpreter start-up, imports and loading the checkpoint. ``python -c "import
torch"`` is measured in the same run as the yardstick: what any command that samples has to pay.
"""
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.results import check_results_path, write_results

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["infer/long_video.py", "infer/serve.py", "train/train.py", "train/train_autoencoder.py"]
CONSOLE = ["ca2vdm-generate", "ca2vdm-serve", "ca2vdm-train", "ca2vdm-train-autoencoder"]
SUBCOMMANDS = [[], ["generate"]]  # ca2vdm --help, ca2vdm generate --help


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
    p = new_parser(__doc__)
    p.add_argument("--repeats", type=count(1, 1000), default=5,
                   help="fresh interpreters per figure (median; default 5)")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=20,
                   help="chunks of the main command (default 20, the README's)")
    p.add_output("--out", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.out:
        check_results_path(args.out)  # before the measurement, not after it
    result = {"python": sys.version.split()[0], "repeats": args.repeats,
              "import_torch": median_wall([sys.executable, "-c", "import torch"], args.repeats), "help": {}}
    for script in SCRIPTS:
        result["help"][script] = median_wall([sys.executable, script, "--help"], args.repeats)
    bin_dir = Path(sys.executable).parent
    for name in CONSOLE:
        found = shutil.which(name, path=str(bin_dir)) or shutil.which(name)
        result["help"][name] = median_wall([found, "--help"], args.repeats) if found else None
    command = shutil.which("ca2vdm", path=str(bin_dir))
    result["ca2vdm_via"] = "console script" if command else "python -m ca2vdm.cli.main"
    started = [command] if command else [sys.executable, "-m", "ca2vdm.cli.main"]
    for words in SUBCOMMANDS:
        result["help"][" ".join(["ca2vdm", *words])] = median_wall([*started, *words, "--help"], args.repeats)
    result["main_command"] = main_command(args.repeats, args.chunks)
    print(f"import torch: {result['import_torch']:.2f} s (the yardstick)")
    for name, seconds in result["help"].items():
        print(f"{name} --help: " + ("not installed" if seconds is None else f"{seconds:.2f} s"))
    m = result["main_command"]
    print(f"main command ({args.chunks} chunks): wall {m['wall']:.2f} s, generation {m['generation']:.2f} s, "
          f"wall minus generation {m['overhead']:.2f} s")
    if args.out:
        print(f"wrote {write_results(args.out, result)}")


if __name__ == "__main__":
    main()
