"""Record a teacher's trajectories for a few-step student's ODE regression (stage 1 of ca2vdm distill).

    ca2vdm make-ode-pairs --checkpoint checkpoints/demo.safetensors --out data/ode-demo --videos 256
    accelerate launch -m ca2vdm.cli.main make-ode-pairs ...      # shards split across processes / GPUs
    ca2vdm make-ode-pairs ... --resume                            # after a kill: finished shards are kept
    ca2vdm make-ode-pairs --checkpoint checkpoints/text-demo.safetensors --prompts data/captioned/captions.jsonl ...

The teacher samples training clips (its first frame and the chunks after it) through its KV cache with the settings
its checkpoint records (16 guided steps for the demo); each chunk's state is kept at the student's ``--steps + 1``
times. A share ``--null-share`` of the clips is unconditional (the null label or the empty prompt, unguided); a text
teacher's clips each take one of the distinct captions of ``--prompts`` (a caption manifest). Shards of ``--shard-size``
clips are written as they fill (memory holds one shard), ``index.json`` last; ``--out`` must be a new or empty folder.
"""
from __future__ import annotations

import argparse
import sys

from ca2vdm.cli.args import count, new_parser, seed
from ca2vdm.config.step_caches import MAX_STEPS
from ca2vdm.errors import Ca2vdmError


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("--checkpoint", required=True, help="the teacher (.safetensors file or checkpoint directory)")
    p.add_output("--out", kind="folder", required=True, help="new (or empty) directory for the shards and index.json")
    p.add_argument("--videos", type=count(1, 10 ** 7), default=256, help="trajectories (clips) to record, 1 .. 10**7")
    p.add_argument("--steps", type=count(1, MAX_STEPS), default=4,
                   help=f"the student's steps; must divide the teacher's; 1 .. {MAX_STEPS}")
    p.add_setting("--null-share", default=0.1, help="share of unconditional clips (null label)", low=0, high=1)
    p.add_argument("--seed", type=seed, default=0, help="clip i draws its noise and label from (seed, i); "
                   "0 .. 2**64 - 1")
    p.add_argument("--batch", type=count(1, 4096), default=8, help="clips sampled together, 1 .. 4096")
    p.add_argument("--shard-size", type=count(1, 10 ** 6), default=64,
                   help="clips per shard (memory holds one shard), 1 .. 10**6")
    p.add_input("--prompts", default=None, help="a text teacher's prompts: a caption manifest (captions.jsonl or "
                "CSV) whose distinct captions the clips are drawn from")
    p.add_argument("--resume", action="store_true", help="continue a recording that was stopped (same settings); "
                   "shards that are damaged or cut short are recorded again")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("--device", default=None, help="default: this process's accelerator (cuda:N), else cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    import torch  # after the arguments: --help answers before torch loads
    from accelerate import PartialState

    from ca2vdm.data.captions import load_captions
    from ca2vdm.training.ode_pairs import write_pairs

    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    try:
        prompts = list(dict.fromkeys(load_captions(args.prompts)[0].values())) if args.prompts else None
        index = write_pairs(args.checkpoint, args.out, args.videos, args.steps, null_share=args.null_share,
                            seed=args.seed, batch=args.batch, shard_size=args.shard_size, resume=args.resume,
                            device=args.device or state.device, rank=state.process_index, world=state.num_processes,
                            barrier=state.wait_for_everyone, progress=not args.no_progress, prompts=prompts)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    if state.is_main_process:
        print(f"wrote {index['videos']} trajectories of {index['frames']} frames at times "
              f"{[round(t, 4) for t in index['times']]} into {args.out} ({len(index['shards'])} shards)")
