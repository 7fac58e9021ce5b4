"""Profile the cached generation path and report where the time goes: attention, MLP, other.

    python scripts/bench/profile_cached.py                    # shipped checkpoint, 5 chunks after a warm-up

Wraps the model's spatial/temporal attention and MLP modules in profiler ranges (forward hooks, here only),
runs chunks with the KV cache under torch.profiler, prints the share of each part and the top operators, and
writes profile.json.
"""
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.paths import DEFAULT_CHECKPOINT
from ca2vdm.io.results import check_results_path, write_results
from ca2vdm.sampling.pipeline import LongVideoPipeline

PARTS = ("spatial_attention", "temporal_attention", "mlp")


def label_modules(model) -> None:
    """Open a profiler range around every attention and MLP call."""
    ranges = {}

    def enter(module, args, part):
        ranges[module] = record_function(part)
        ranges[module].__enter__()

    for block in model.repeated_blocks():
        for part, module in zip(PARTS, (block.spatial, block.temporal, block.mlp)):
            module.register_forward_pre_hook(lambda m, a, part=part: enter(m, a, part))
            module.register_forward_hook(lambda m, a, out: ranges.pop(m).__exit__(None, None, None))


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="weights file or training checkpoint folder")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=5, help="cached chunks profiled after the warm-up")
    p.add_output("--out-dir", kind="folder", default="outputs/bench", help="folder for the profile JSON")
    args = p.parse_args()
    out = check_results_path(Path(args.out_dir) / "profile.json", [args.checkpoint])
    torch.set_grad_enabled(False)
    model, meta = load_model(args.checkpoint)
    label_modules(model)
    pipe = LongVideoPipeline.for_checkpoint(model, meta)
    state = pipe.start(seed=0)
    for _ in range(4):  # warm-up and a full window
        pipe.next_chunk(state)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("generate"):
            for _ in range(args.chunks):
                pipe.next_chunk(state)
    events = {e.key: e for e in prof.key_averages()}
    total = events["generate"].cpu_time_total
    shares = {part: events[part].cpu_time_total / total for part in PARTS if part in events}
    shares["other"] = 1 - sum(shares.values())
    for part, share in shares.items():
        print(f"{part:20} {100 * share:5.1f} %")
    ops = sorted((e for e in prof.key_averages() if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    top = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in ops[:15]]
    print("top operators by self time:")
    for row in top:
        print(f"  {row['op']:40} {row['self_ms']:9.1f} ms  {row['calls']:7d} calls")
    write_results(out, {"chunks": args.chunks, "shares": shares, "top_ops": top}, [args.checkpoint])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
