"""Memory of one long-rollout DMD step against the rollout's length (it should stay flat).

    python scripts/bench/distill_memory.py                       # rollouts of 10, 20, 40, 80 chunks, demo models
    python scripts/bench/distill_memory.py --chunks 10 40 --json docs/results/distill_memory.json

One student step of DMD as ``train/distill.py`` takes it with ``distill.rollout_chunks`` = N: the student
(``--student``) rolls out N chunks as inference does, the window of the training clip's chunks at the rollout's end
(the longest rollout a step can make) with gradients through its exit steps; the teacher (guided) and the critic score
it through their own caches; DMD's loss and the critic's flow loss, then the backward pass. Each length runs in a
fresh process (peak RSS is per process) and reports its peak RSS and the bytes the autograd graph held at the
backward pass (every storage a tensor saved for backward lives in, once, the weights included: what would grow if
the chunks before the window kept a graph).
Writes the rows and the ratios of the longest rollout to the shortest.
"""
import argparse
import json
import resource
import subprocess
import sys
from functools import partial
from pathlib import Path

from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.results import check_results_path, write_results


def one_step(student_path: str, teacher_path: str, chunks: int, batch: int) -> dict:
    """The figures of one DMD student step with a rollout of ``chunks`` chunks after the first frame."""
    import torch

    from ca2vdm.checkpoints.weights import load_model
    from ca2vdm.sampling.pipeline import LongVideoPipeline
    from ca2vdm.training.distill_rollout import Condition, Plan, self_rollout
    from ca2vdm.training.distill_window import window_velocity
    from ca2vdm.training.dmd import dmd_loss, flow_loss

    torch.set_num_threads(1)
    student, meta = load_model(student_path)
    teacher, teacher_meta = load_model(teacher_path)
    critic, _ = load_model(teacher_path)
    student.train(), critic.train(), teacher.requires_grad_(False)
    cfg = student.cfg
    window = len(cfg.layout.clip_chunks(cfg.clip_frames))
    total = chunks + int(cfg.layout.first_frame_chunk)
    label = Condition(label=torch.arange(batch) % cfg.num_classes if cfg.num_classes else None)
    saved = {}  # storage -> bytes: each tensor the graph keeps, counted once however many views of it are saved
    keep = lambda x: (saved.setdefault(x.untyped_storage().data_ptr(), x.untyped_storage().nbytes()), x)[1]  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
        pipe = LongVideoPipeline(student, meta.sampler.replace(step_cache="none"))
        plan = Plan(total - window, [meta.sampler.steps - 1] * window, None)
        made = self_rollout(pipe, batch, label, 0, plan)
        score = lambda model, scale: partial(window_velocity, LongVideoPipeline(  # noqa: E731
            model, meta.sampler.replace(cfg_scale=scale, step_cache="none")), made)
        loss = dmd_loss(made.clip, score(teacher, teacher_meta.sampler.cfg_scale), score(critic, 1.0), made.chunks)
        loss = loss + flow_loss(made.clip, score(critic, 1.0), made.chunks)
    loss.backward()
    return {"chunks": chunks, "frames_before_window": made.frames, "graph_mb": sum(saved.values()) / 2 ** 20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = new_parser(__doc__)
    p.add_input("--student", default="checkpoints/demo-4step.safetensors", help="the student rolled out (weights)")
    p.add_input("--teacher", default="checkpoints/demo.safetensors", help="the teacher, also the critic's start")
    p.add_argument("--chunks", type=count(1, 10 ** 4), nargs="+", default=[10, 20, 40, 80],
                   help="rollout lengths (one process each), 1 .. 10**4")
    p.add_argument("--batch", type=count(1, 1024), default=2, help="videos per step (train.batch_size), 1 .. 1024")
    p.add_output("--json", default="outputs/bench/distill_memory.json", help="JSON file for the figures")
    p.add_argument("--one", type=count(1, 10 ** 4), default=None, help=argparse.SUPPRESS)  # a child: one length
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one_step(args.student, args.teacher, args.one, args.batch)))
        return
    out = check_results_path(args.json, [args.student, args.teacher])
    rows = []
    for chunks in args.chunks:
        proc = subprocess.run([sys.executable, __file__, "--one", str(chunks), "--student", args.student,
                               "--teacher", args.teacher, "--batch", str(args.batch)], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).resolve().parents[2])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{chunks:4d} chunks: graph {rows[-1]['graph_mb']:.2f} MB, peak RSS {rows[-1]['peak_rss_mb']:.1f} MB",
              flush=True)
    ratios = {key: rows[-1][key] / rows[0][key] for key in ("graph_mb", "peak_rss_mb")}
    print(f"{rows[-1]['chunks']} chunks / {rows[0]['chunks']} chunks: graph {ratios['graph_mb']:.3f}x, peak RSS "
          f"{ratios['peak_rss_mb']:.3f}x")
    write_results(out, {"student": args.student, "teacher": args.teacher, "batch": args.batch, "rows": rows,
                        "ratio_last_over_first": ratios}, [args.student, args.teacher])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
