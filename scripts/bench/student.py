"""Seconds per chunk of a few-step student against its teacher, each at its recorded settings, with and without a
label, in one run (commit passes included: everything ``next_chunk`` does).

    python scripts/bench/student.py --teacher checkpoints/demo.safetensors \
        --student checkpoints/demo-4step.safetensors --chunks 20 --repeats 3 --json docs/results/distill_speed.json

Runs alternate (teacher, student, teacher, ...) so a busy machine slows both alike; the chunk time of a run is the
median over its chunks after the first frame (the window fills within the first chunks and the cost is flat after),
and a setting's figure is the median over its runs. Run with OMP_NUM_THREADS=1 on a shared machine. The teacher is
also timed at the student's step count (its own guidance) as the plain few-step baseline.
"""
import statistics
import time

import torch

import ca2vdm
from ca2vdm.cli.args import count, new_parser
from ca2vdm.io.results import check_results_path, write_results


@torch.no_grad()
def chunk_seconds(pipe, chunks: int, label: int | None, seed: int) -> float:
    """Median seconds per chunk of one video (the first frame excluded)."""
    state = pipe.sampler.start(batch=1, label=label, seed=seed)
    pipe.sampler.next_chunk(state)  # the first frame
    times = []
    for _ in range(chunks):
        tic = time.perf_counter()
        pipe.sampler.next_chunk(state)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main(argv=None) -> None:
    p = new_parser(__doc__)
    p.add_input("--teacher", default="checkpoints/demo.safetensors", help="the teacher checkpoint")
    p.add_input("--student", default="checkpoints/demo-4step.safetensors", help="the student checkpoint")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=20, help="chunks per run")
    p.add_argument("--repeats", type=count(1, 1000), default=3, help="runs per setting")
    p.add_argument("--label", type=count(0), default=1, help="the label of the labelled runs")
    p.add_output("--json", default="docs/results/distill_speed.json", help="where to write the figures")
    args = p.parse_args(argv)
    check_results_path(args.json, [args.teacher, args.student], "json")  # before the measurement, not after it
    student = ca2vdm.load_pipeline(args.student, "cpu")
    pipes = {"teacher": ca2vdm.load_pipeline(args.teacher, "cpu"), "student": student,
             "teacher_at_student_steps": ca2vdm.load_pipeline(args.teacher, "cpu", steps=student.settings.steps)}
    results = {f"{name}/{kind}": [] for name in pipes for kind in ("label", "no_label")}
    for repeat in range(args.repeats):
        for kind, label in (("label", args.label), ("no_label", None)):
            for name, pipe in pipes.items():
                results[f"{name}/{kind}"].append(chunk_seconds(pipe, args.chunks, label, seed=repeat))
    medians = {key: statistics.median(values) for key, values in results.items()}
    report = {"teacher": args.teacher, "student": args.student, "chunks": args.chunks, "repeats": args.repeats,
              "threads": torch.get_num_threads(),
              "settings": {name: pipe.settings.to_dict() for name, pipe in pipes.items()},
              "seconds_per_chunk": medians, "runs": results,
              "speedup_label": medians["teacher/label"] / medians["student/label"],
              "speedup_no_label": medians["teacher/no_label"] / medians["student/no_label"],
              "student_frames_per_s_label": student.model.cfg.chunk_frames / medians["student/label"]}
    write_results(args.json, report, [args.teacher, args.student], "json")
    for key, value in medians.items():
        print(f"{key:34s} {value * 1000:8.1f} ms per chunk")
    print(f"student vs teacher: {report['speedup_label']:.2f}x faster with a label, {report['speedup_no_label']:.2f}x "
          f"without; the student makes {report['student_frames_per_s_label']:.0f} frames/s")


if __name__ == "__main__":
    main()
