"""Measure the live demo as a page sees it: generated frames per second and time to the first frame, with and without
a step cache, through the real WebSocket protocol; and where the time goes (model, mp4 encoding, transport).

    python scripts/bench/serve.py                                   # starts infer/serve.py with the shipped model
    python scripts/bench/serve.py --policy teacache --thresholds 0.1 0.2 --chunks 20 --repeats 3
    python scripts/bench/serve.py --url ws://127.0.0.1:7860/ws       # a server that is already running

Runs alternate between the settings (none, policy@t1, policy@t2, none, ...) so a busy machine slows them alike; the
JSON reports medians per setting and the ratio to "none" from the same run. The client acknowledges every chunk at
once ("shown"), so the server is never held back by playback: the figures are the generation's own rate.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from websockets.sync.client import connect

from ca2vdm.cli.args import count, new_parser, number
from ca2vdm.config.options import Declared
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.serve.protocol import MAX_UPLOAD_BYTES, read_chunk_message

ROOT = Path(__file__).resolve().parents[2]
PLAYBACK_FPS = 8
THRESHOLD = Declared(float, "a step cache's threshold", low=0, high=10 ** 6)


def parse_args(argv=None) -> argparse.Namespace:
    p = new_parser(__doc__)
    p.add_argument("--url", default=None, help="WebSocket of a running server (default: start infer/serve.py)")
    p.add_input("--checkpoint", default=None, help="for the started server (default: the shipped demo model)")
    p.add_argument("--model", default=None, help="model name on the server (default: its first)")
    p.add_argument("--policy", default="teacache", help="step-caching policy to compare with none")
    p.add_argument("--thresholds", type=number(THRESHOLD), nargs="*", default=[0.1, 0.2],
                   help="policy thresholds (README 'Step caching: which policy when': 0.1-0.2 for previews); none "
                        "given: only the model without a step cache (e.g. a few-step student)")
    p.add_argument("--label", type=count(0), default=None, help="class label (default none: the page's default)")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=20, help="chunks per run")
    p.add_argument("--repeats", type=count(1, 1000), default=3, help="runs per setting")
    p.add_argument("--threads", type=count(1, 1024), default=None,
                   help="OMP_NUM_THREADS for the started server (default: inherited). On a busy machine 1 thread "
                        "avoids OpenMP spin-waiting on a core another process holds")
    p.add_output("--out", default="docs/results/serve.json", help="JSON with the figures")
    return p.parse_args(argv)


def start_server(checkpoint: str | None, threads: int | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, str(ROOT / "infer" / "serve.py"), "--port", str(port)]
    command += ["--checkpoint", checkpoint] if checkpoint else []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT),
                                 **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    line = proc.stdout.readline()  # "serving ... at http://..." once the models are loaded
    if not line.startswith("serving"):
        proc.kill()
        sys.exit(f"error: infer/serve.py did not start: {line}{proc.communicate()[0]}")
    for _ in range(600):  # uvicorn binds the port just after that line
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    return proc, f"ws://127.0.0.1:{port}/ws"


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def one_run(url: str, start: dict, pid: int | None) -> dict:
    """One generation: client-side wall times, the server's per-chunk figures and (for a server this script
    started) the CPU time the server used."""
    cpu = cpu_seconds(pid)
    with connect(url, max_size=MAX_UPLOAD_BYTES) as ws:
        json.loads(ws.recv())  # hello
        tic = time.perf_counter()
        ws.send(json.dumps({"type": "start", **start}))
        chunks, first, started = [], None, None
        while True:
            message = ws.recv()
            now = time.perf_counter()
            if isinstance(message, bytes):
                header, _ = read_chunk_message(message)
                first = first or now
                chunks.append({**header, "received": now - started})
                ws.send(json.dumps({"type": "shown", "frames": header["total_frames"]}))
                continue
            message = json.loads(message)
            if message["type"] == "started":
                started = now
            elif message["type"] == "error":
                sys.exit(f"error from the server: {message['message']}")
            elif message["type"] == "done":
                break
    wall = now - started
    cpu = None if cpu is None else cpu_seconds(pid) - cpu
    model = sum(c["seconds"] for c in chunks)
    encode = sum(c["encode_seconds"] for c in chunks)
    return {"frames": message["frames"], "wall_seconds": wall, "fps": message["frames"] / wall,
            "first_frame_seconds": first - tic, "server_first_frame_seconds": message["first_frame_seconds"],
            "model_seconds": model, "encode_seconds": encode, "transport_and_other_seconds": wall - model - encode,
            "computed": chunks[-1]["computed_total"], "skipped": chunks[-1]["skipped_total"],
            "server_cpu_seconds": cpu, "frames_per_server_cpu_second": cpu and message["frames"] / cpu,
            "seconds_per_chunk": [c["seconds"] for c in chunks if c["kind"] == "chunk"]}


def summary(runs: list[dict]) -> dict:
    keys = ("fps", "first_frame_seconds", "server_first_frame_seconds", "wall_seconds", "model_seconds",
            "encode_seconds", "transport_and_other_seconds", "frames_per_server_cpu_second")
    out = {f"median_{k}": statistics.median(r[k] for r in runs) if runs[0][k] is not None else None for k in keys}
    out["evals_computed"], out["evals_skipped"] = runs[0]["computed"], runs[0]["skipped"]
    return {**out, "runs": runs}


def main(argv=None) -> None:
    args = parse_args(argv)
    check_results_path(args.out)  # before the measurement, not after it
    load = os.getloadavg()
    proc, url = (None, args.url) if args.url else start_server(args.checkpoint, args.threads)
    try:
        with connect(url) as ws:
            hello = json.loads(ws.recv())
        model = args.model or hello["models"][0]["name"]
        names = [p["name"] for p in hello["policies"]]
        if args.policy not in names:
            sys.exit(f"error: --policy {args.policy} is not one of the server's: {', '.join(names)}")
        settings = {"none": {"step_cache": "none"}}
        settings.update({f"{args.policy}@{t}": {"step_cache": args.policy, "step_cache_options": {"threshold": t}}
                         for t in args.thresholds})
        base = {"model": model, "label": args.label, "seed": 0, "chunks": args.chunks}
        pid = proc.pid if proc is not None else None
        one_run(url, {**base, "chunks": 2}, pid)  # warm-up
        runs: dict[str, list[dict]] = {name: [] for name in settings}
        for repeat in range(args.repeats):
            for name, setting in settings.items():
                runs[name].append(one_run(url, {**base, "seed": repeat, **setting}, pid))
                print(f"{name:>16} run {repeat}: {runs[name][-1]['fps']:.2f} frames/s, first frame "
                      f"{runs[name][-1]['first_frame_seconds']:.2f} s", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    results = {name: summary(r) for name, r in runs.items()}
    for name, result in results.items():
        result["speedup_vs_none"] = result["median_fps"] / results["none"]["median_fps"]
        result["meets_playback_rate"] = result["median_fps"] >= PLAYBACK_FPS
    report = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "model": model, "label": args.label, "chunks": args.chunks, "repeats": args.repeats,
              "playback_fps": PLAYBACK_FPS, "device": hello["device"], "torch_threads": hello["threads"],
              "cpus": os.cpu_count(), "load_average_before": load, "load_average_after": os.getloadavg(),
              "settings": results}
    write_results(args.out, report)
    for name, r in results.items():
        print(f"{name:>16}: {r['median_fps']:.2f} frames/s ({r['speedup_vs_none']:.2f}x), first frame "
              f"{r['median_first_frame_seconds']:.2f} s; model {r['median_model_seconds']:.2f} s, encode "
              f"{r['median_encode_seconds']:.2f} s, transport+other {r['median_transport_and_other_seconds']:.2f} s "
              f"of {r['median_wall_seconds']:.2f} s" + (f"; {r['median_frames_per_server_cpu_second']:.2f} frames per "
              "server CPU second" if r["median_frames_per_server_cpu_second"] else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
