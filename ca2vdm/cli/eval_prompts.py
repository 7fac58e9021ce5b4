"""Measure a text model on captioned shapes: prompt adherence, prompt switches (recache, keep, reset, flush) and the
cost.

    ca2vdm eval prompts --checkpoint checkpoints/text-demo.safetensors --json docs/results/prompts.json \
        --sheet docs/images/prompt_switch.png

Adherence: videos from prompts naming a colour-shape pair of the training data (``adherence_train``) or one held out
of it (``adherence_heldout``, ca2vdm/data/captioned.py), the fraction whose colour and shape, read back by
ca2vdm/evaluation/prompt_adherence.py (palette colour of the foreground, a shape classifier fitted on rendered
shapes; its own accuracy is ``reader_accuracy``), match the prompt; read over every generated frame but the first.
Switch: videos from "a A1 S1" switched to "a A2 S2" (other colour and shape) at chunk ``--switch-at``, in each mode;
``chunks_to_follow`` = chunks from the switch until every later chunk (of ``--after``) matches the new prompt (1: the
first chunk after the switch does; the median over videos, null if most never follow), ``chunks_to_colour`` the same
for the new prompt's colour alone, ``seam`` = the change from
the last frame before the switch to the first after it, over the mean frame-to-frame change inside the chunks around
it (the mean over videos; ``seam_without_switch``: the same at that chunk of unswitched videos;
ca2vdm/evaluation/prompt_switches.py). Cost: seconds per chunk of the text model and of a label model of the same
sizes (``--label-checkpoint``), window full, guided, the median over interleaved repeats, and their analytic FLOPs; a
re-cache's seconds and FLOPs against a chunk's (ca2vdm/evaluation/prompt_cost.py).
"""
from __future__ import annotations

import argparse
import json
import sys

from ca2vdm.cli.args import count, new_parser, number, seed
from ca2vdm.config import SamplerSettings
from ca2vdm.config.options import declared_fields
from ca2vdm.errors import Ca2vdmError
from ca2vdm.io.paths import DEFAULT_CHECKPOINT

TEXT_DEMO = DEFAULT_CHECKPOINT.with_name("text-demo.safetensors")  # shipped beside the demo model
SWITCH_CONTEXT = 2  # chunks before the switch the seam and the contact sheet compare with (so --switch-at >= 2)
LIMIT = 1000  # chunks of a video, and repeats, this evaluation makes at most (it runs on a CPU in minutes)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("--checkpoint", default=str(TEXT_DEMO), help="a text model's weights (default: the shipped "
                "checkpoints/text-demo.safetensors)")
    p.add_output("--json", required=True, help="write the figures here")
    p.add_argument("--videos", type=count(1, LIMIT), default=4,
                   help="videos per training pair (held-out pairs: twice as many), 1 .. 1000")
    p.add_argument("--chunks", type=count(1, LIMIT), default=6, help="chunks per adherence video, 1 .. 1000")
    p.add_argument("--seeds", type=count(1, LIMIT), default=2, help="videos per switch pair, 1 .. 1000")
    p.add_argument("--switch-at", type=count(SWITCH_CONTEXT, LIMIT), default=4,
                   help=f"chunk of the switch in videos of --switch-at + --after chunks, {SWITCH_CONTEXT} .. {LIMIT} "
                        f"(the seam compares it with the {SWITCH_CONTEXT} chunks before)")
    p.add_argument("--after", type=count(SWITCH_CONTEXT, LIMIT), default=6,
                   help=f"chunks generated from the switch on, {SWITCH_CONTEXT} .. {LIMIT}")
    p.add_input("--label-checkpoint", default=str(DEFAULT_CHECKPOINT),
                help="a label model of the same sizes, for the cost comparison ('' to skip; default: the shipped "
                     "checkpoints/demo.safetensors)")
    p.add_argument("--cost-repeats", type=count(1, LIMIT), default=3,
                   help="interleaved repeats of the timing, 1 .. 1000")
    p.add_output("--sheet", default=None, help="a contact sheet PNG of one switched video in each mode")
    p.add_argument("--seed", type=seed, default=0, help="first seed, 0 .. 2**64 - 1")
    cfg_scale = declared_fields(SamplerSettings)["cfg_scale"]
    p.add_argument("--cfg-scale", type=number(cfg_scale), default=None,
                   help=f"guidance scale (default: the checkpoint's); {cfg_scale.describe()}")
    p.add_argument("--cost-only", action="store_true", help="measure only the cost (a quiet machine's timing)")
    args = p.parse_args(argv)
    if args.cost_only and not args.label_checkpoint:
        p.error("--cost-only compares with a label model: give --label-checkpoint")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)  # outputs checked there, before the work
    inputs = [args.checkpoint] + ([args.label_checkpoint] if args.label_checkpoint else [])
    try:
        run(args, inputs)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    except KeyboardInterrupt:
        sys.exit("stopped by SIGINT before the figures were measured; nothing written")


def run(args: argparse.Namespace, inputs: list[str]) -> None:
    """The measurements of ``args``, written to ``args.json`` (and the contact sheet)."""
    import numpy as np
    import torch

    from ca2vdm.evaluation.prompt_adherence import ShapeReader, adherence, check_reader, held_out_pairs, training_pairs
    from ca2vdm.evaluation.prompt_cost import cost
    from ca2vdm.evaluation.prompt_switches import switch_eval
    from ca2vdm.generation.api import load_pipeline
    from ca2vdm.io.results import write_results
    from ca2vdm.io.video_writer import save_contact_sheet

    torch.manual_seed(args.seed)
    pipe = load_pipeline(args.checkpoint, "cpu", cfg_scale=args.cfg_scale)
    label_pipe = load_pipeline(args.label_checkpoint, "cpu") if args.label_checkpoint else None
    check_models(args, pipe, label_pipe)
    out = {"checkpoint": args.checkpoint, "sampler": pipe.settings.to_dict()}
    if args.cost_only:
        out["cost"] = cost(pipe, label_pipe, args.cost_repeats, 8)
        print(f"cost {json.dumps(out['cost'])}")
        write_results(args.json, out, inputs, "json")
        return
    reader = ShapeReader.fit()
    out["reader_accuracy"] = check_reader(reader)
    out["adherence_train"], train_rows = adherence(pipe, reader, training_pairs(), args.videos, args.chunks, args.seed)
    out["adherence_heldout"], held_rows = adherence(pipe, reader, held_out_pairs(), 2 * args.videos, args.chunks,
                                                    args.seed + 1)
    print(f"adherence: training pairs {out['adherence_train']:.2f}, held-out pairs {out['adherence_heldout']:.2f} "
          f"(reader accuracy on rendered shapes {out['reader_accuracy']:.3f})")
    out["switch"], extra = switch_eval(pipe, reader, args.seeds, args.switch_at, args.after, args.seed)
    out["seam_without_switch"] = extra["seam_without_switch"]
    out["cost"] = cost(pipe, label_pipe, args.cost_repeats, 8)
    print(f"seam without a switch {out['seam_without_switch']:.2f}; cost {json.dumps(out['cost'])}")
    out["videos"] = {"train": train_rows, "heldout": held_rows}
    write_results(args.json, out, inputs, "json")
    if args.sheet:  # one row per mode: the chunks around the switch of the first video
        start = extra["at_frame"] - SWITCH_CONTEXT * pipe.model.cfg.chunk_frames
        rows = [extra["videos"][m][0][start:start + 2 * SWITCH_CONTEXT * pipe.model.cfg.chunk_frames] for m in
                ("none", "recache", "keep", "reset")]
        sheet = np.concatenate(rows).repeat(3, axis=1).repeat(3, axis=2)
        save_contact_sheet(sheet, args.sheet, frames_per_row=2 * SWITCH_CONTEXT * pipe.model.cfg.chunk_frames)
        print(f"wrote {args.sheet}")


def check_models(args: argparse.Namespace, pipe, label_pipe) -> None:
    """A text model to measure, a label model to compare its cost with (one line and exit 1 otherwise)."""
    if not pipe.model.text_conditional:
        sys.exit(f"error: --checkpoint {args.checkpoint}: is not a text model (it takes "
                 f"{'labels' if pipe.model.cfg.num_classes else 'no condition'}, not prompts); give a text model's "
                 "weights, e.g. checkpoints/text-demo.safetensors")
    if label_pipe is not None and (label_pipe.model.text_conditional or not label_pipe.model.cfg.num_classes):
        sys.exit(f"error: --label-checkpoint {args.label_checkpoint}: is not a label model; give one of the text "
                 "model's sizes (e.g. checkpoints/demo.safetensors), or '' to skip the comparison")

