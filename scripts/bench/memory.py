"""Peak memory of long-video generation vs the number of chunks (it should stay flat).

    python scripts/bench/memory.py                        # 10, 20, 40, 80 chunks on the CPU
    python scripts/bench/memory.py --device cuda

Each length runs ``infer/long_video.py`` in a fresh process (peak RSS is per process) and reads its --stats:
``peak_rss_mb`` on the CPU, ``peak_gpu_mb`` (torch.cuda.max_memory_allocated) on a GPU. Writes memory.json.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.results import check_results_path, write_results

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("--checkpoint", default=None, help="default: the shipped checkpoint")
    p.add_argument("--chunks", type=count(1), nargs="+", default=[10, 20, 40, 80],
                   help="video lengths to measure, in chunks (one process per length)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for the JSON (and plot)")
    args = p.parse_args()
    out = check_results_path(Path(args.out_dir) / "memory.json", [args.checkpoint] if args.checkpoint else [])
    key = "peak_gpu_mb" if args.device.startswith("cuda") else "peak_rss_mb"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for chunks in args.chunks:
            stats = Path(tmp) / f"{chunks}.json"
            cmd = [sys.executable, str(ROOT / "infer/long_video.py"), "--chunks", str(chunks), "--device", args.device,
                   "--out", str(Path(tmp) / f"{chunks}.mp4"), "--stats", str(stats)]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = json.loads(stats.read_text())
            rows.append({"chunks": chunks, "frames": result["frames"], key: result[key],
                         "seconds": result["seconds"]})
            print(f"{chunks:4d} chunks  {result['frames']:5d} frames  {key} {result[key]:8.1f}", flush=True)
    ratio = rows[-1][key] / rows[0][key]
    print(f"peak at {rows[-1]['chunks']} chunks / at {rows[0]['chunks']} chunks: {ratio:.3f}")
    write_results(out, {"device": args.device, "metric": key, "rows": rows, "ratio_last_over_first": ratio},
                  [args.checkpoint] if args.checkpoint else [])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
