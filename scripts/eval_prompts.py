"""Measure a text model on captioned shapes: prompt adherence, prompt switches (recache, keep, reset) and the cost.

    python scripts/eval_prompts.py --checkpoint checkpoints/text-demo.safetensors --json docs/results/prompts.json \
        --sheet docs/images/prompt_switch.png

Adherence: videos from prompts naming a colour-shape pair of the training data (``adherence_train``) or one held out
of it (``adherence_heldout``, ca2vdm/data/captioned.py), the fraction whose colour and shape, read back by
ca2vdm/evaluation/prompt_adherence.py (palette colour of the foreground, a shape classifier fitted on rendered
shapes; its own accuracy is ``reader_accuracy``), match the prompt; read over every generated frame but the first.
Switch: videos from "a A1 S1" switched to "a A2 S2" (other colour and shape) at chunk ``--switch-at``, in each mode;
``chunks_to_follow`` = chunks from the switch until every later chunk (of ``--after``) matches the new prompt (1: the
first chunk after the switch does; the median over videos, null if most never follow), ``seam`` = the change from
the last frame before the switch to the first after it, over the mean frame-to-frame change inside the chunks around
it (the mean over videos; ``seam_without_switch``: the same at that chunk of unswitched videos). Cost: seconds per
chunk of the text model and of a label model of the same sizes (``--label-checkpoint``), window full, guided, the
median over interleaved repeats, and their analytic FLOPs; a re-cache's seconds and FLOPs against a chunk's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ca2vdm.data.captioned import draw_attributes
from ca2vdm.errors import Ca2vdmError
from ca2vdm.evaluation.prompt_adherence import (
    ShapeReader,
    check_reader,
    held_out_pairs,
    read_back,
    training_pairs,
)
from ca2vdm.generation.api import load_pipeline, to_pixels
from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.io.paths import check_writable_file
from ca2vdm.io.video_writer import save_contact_sheet
from ca2vdm.models.flops import forward_flops

SWITCH_PAIRS = [(("red", "circle"), ("blue", "square")), (("yellow", "triangle"), ("cyan", "circle")),
                (("green", "square"), ("magenta", "triangle")), (("cyan", "square"), ("yellow", "circle"))]
FOLLOW_WITHIN = 6  # chunks_to_follow is null past this


def generate(pipe, prompts: list[str], chunks: int, seed: int, switch: tuple[int, list[str], str] | None = None):
    """(B, T, H, W, 3) uint8 videos of ``prompts`` (one per video, seeds seed..), ``chunks`` chunks after the first
    frame; ``switch`` = (chunk, new prompts, mode)."""
    lvp, frames = pipe.sampler, []
    state = lvp.start(batch=len(prompts), prompt=prompts, seed=[seed + i for i in range(len(prompts))])
    frames.append(lvp.next_chunk(state).frames)  # the first frame
    for index in range(chunks):
        if switch is not None and index == switch[0]:
            lvp.switch(state, prompt=switch[1], mode=switch[2])
        frames.append(lvp.next_chunk(state).frames)
    return to_pixels(pipe.codec, torch.cat(frames, dim=2))


def adherence(pipe, reader, pairs, videos: int, chunks: int, seed: int) -> tuple[float, list[dict]]:
    rng = np.random.default_rng(seed)
    attributes = [draw_attributes(rng, c, s) for c, s in pairs for _ in range(videos)]
    prompts = [a.caption(size=rng.random() < 0.75, motion=rng.random() < 0.75) for a in attributes]
    pixels = generate(pipe, prompts, chunks, seed)
    rows = []
    for a, prompt, video in zip(attributes, prompts, pixels):
        colour, shape = read_back(torch.from_numpy(video[1:]), reader)
        rows.append({"prompt": prompt, "colour": colour, "shape": shape, "match": (colour, shape) == (a.colour,
                                                                                                      a.shape)})
    return sum(r["match"] for r in rows) / len(rows), rows


def chunk_reads(video: np.ndarray, reader, chunk: int) -> list[tuple]:
    return [read_back(torch.from_numpy(video[s:s + chunk]), reader) for s in range(1, len(video), chunk)]


def seam_ratio(video: np.ndarray, at_frame: int, chunk: int, around: range) -> float:
    """Change across the seam before ``at_frame`` over the mean frame-to-frame change inside the chunks ``around``."""
    v = video.astype(np.float32) / 255
    seam = np.abs(v[at_frame] - v[at_frame - 1]).mean()
    inside = [np.abs(np.diff(v[s:s + chunk], axis=0)).mean() for s in (1 + k * chunk for k in around)]
    return float(seam / np.mean(inside))


def followed(reads: list[tuple], target: tuple, at: int) -> int | None:
    """Chunks from the switch until every later chunk matches ``target`` (1 = at once); None if not within reach."""
    after = reads[at:at + FOLLOW_WITHIN]
    for k in range(len(after)):
        if all(r == target for r in after[k:]):
            return k + 1
    return None


def switch_eval(pipe, reader, seeds: int, at: int, after: int, seed: int) -> tuple[dict, dict]:
    cfg = pipe.model.cfg
    old = [f"a {c} {s}" for (c, s), _ in SWITCH_PAIRS for _ in range(seeds)]
    new = [f"a {c} {s}" for _, (c, s) in SWITCH_PAIRS for _ in range(seeds)]
    targets = [t for _, t in SWITCH_PAIRS for _ in range(seeds)]
    at_frame, around = 1 + at * cfg.chunk_frames, range(at - 2, at + after)
    results, videos = {}, {}
    for mode in ("recache", "keep", "reset"):
        pixels = generate(pipe, old, at + after, seed, (at, new, mode))
        follow = [followed(chunk_reads(v, reader, cfg.chunk_frames), t, at) for v, t in zip(pixels, targets)]
        ranked = sorted(f if f is not None else FOLLOW_WITHIN + 1 for f in follow)
        median = ranked[len(ranked) // 2]
        results[mode] = {"chunks_to_follow": None if median > FOLLOW_WITHIN else median,
                         "seam": float(np.mean([seam_ratio(v, at_frame, cfg.chunk_frames, around) for v in pixels])),
                         "per_video_chunks_to_follow": follow, "followed": sum(f is not None for f in follow) / len(
                             follow)}
        videos[mode] = pixels
        print(f"switch {mode:8s} chunks_to_follow {results[mode]['chunks_to_follow']} (per video {follow}), seam "
              f"{results[mode]['seam']:.2f}x the change inside chunks")
    plain = generate(pipe, old, at + after, seed)
    videos["none"] = plain
    return results, {"videos": videos, "seam_without_switch": float(np.mean(
        [seam_ratio(v, at_frame, cfg.chunk_frames, around) for v in plain])), "at_frame": at_frame}


def chunk_seconds(pipe, condition: dict, chunks: int) -> list[float]:
    lvp = pipe.sampler
    state = lvp.start(seed=0, **condition)
    times = []
    for _ in range(chunks):
        tic = time.perf_counter()
        lvp.next_chunk(state)
        times.append(time.perf_counter() - tic)
    return times, state


def cost(text_pipe, label_pipe, repeats: int, chunks: int) -> dict:
    """Seconds per chunk once the window is full (text vs label model, guided), interleaved; a re-cache's seconds."""
    cfg = text_pipe.model.cfg
    full = -(-cfg.max_context_frames // cfg.chunk_frames)  # chunks before the window is full
    text, label, switch = [], [], []
    for _ in range(repeats):
        times, state = chunk_seconds(text_pipe, {"prompt": "a red circle"}, chunks)
        text += times[full:]
        tic = time.perf_counter()
        text_pipe.sampler.switch(state, prompt="a blue square")
        switch.append(time.perf_counter() - tic)
        label += chunk_seconds(label_pipe, {"label": 0}, chunks)[0][full:] if label_pipe else []
    window, L = cfg.max_context_frames, cfg.chunk_frames
    chunk_flops = (text_pipe.settings.steps + 1) * forward_flops(cfg, L, window + L)  # denoising steps + commit
    recache_flops = sum(forward_flops(cfg, stop - start, stop) for start, stop in cfg.layout.spans(0, window))
    out = {"text_chunk_seconds": statistics.median(text), "recache_seconds": statistics.median(switch),
           "recache_over_chunk": statistics.median(switch) / statistics.median(text),
           "recache_flops_over_chunk": recache_flops / chunk_flops,
           "recache_flops_over_window_commit": recache_flops / forward_flops(cfg, window, window),
           "commit_passes_in_recache": len(cfg.layout.spans(0, window))}
    if label:
        lcfg = label_pipe.model.cfg
        out.update(label_chunk_seconds=statistics.median(label),
                   text_over_label=statistics.median(text) / statistics.median(label),
                   text_over_label_flops=forward_flops(cfg, L, window + L) / forward_flops(lcfg, L, window + L))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/text-demo.safetensors", help="a text model's weights")
    p.add_argument("--json", required=True, help="write the figures here")
    p.add_argument("--videos", type=int, default=4, help="videos per training pair (held-out pairs: twice as many)")
    p.add_argument("--chunks", type=int, default=6, help="chunks per adherence video")
    p.add_argument("--seeds", type=int, default=2, help="videos per switch pair")
    p.add_argument("--switch-at", type=int, default=4, help="chunk of the switch")
    p.add_argument("--after", type=int, default=6, help="chunks generated from the switch on")
    p.add_argument("--label-checkpoint", default="checkpoints/demo.safetensors",
                   help="a label model of the same sizes, for the cost comparison ('' to skip)")
    p.add_argument("--cost-repeats", type=int, default=3, help="interleaved repeats of the timing")
    p.add_argument("--sheet", default=None, help="a contact sheet PNG of one switched video in each mode")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--cost-only", action="store_true", help="measure only the cost (a quiet machine's timing)")
    args = p.parse_args(argv)
    if args.cost_only and not args.label_checkpoint:
        p.error("--cost-only compares with a label model: give --label-checkpoint")
    try:  # before the work, not after it
        for name in ("json", "sheet"):
            if getattr(args, name):
                check_writable_file(getattr(args, name), name)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    pipe = load_pipeline(args.checkpoint, "cpu", cfg_scale=args.cfg_scale)
    out = {"checkpoint": args.checkpoint, "sampler": pipe.settings.to_dict()}
    if args.cost_only:
        out["cost"] = cost(pipe, load_pipeline(args.label_checkpoint, "cpu"), args.cost_repeats, 8)
        print(f"cost {json.dumps(out['cost'])}")
        write_text_atomic(args.json, json.dumps(out, indent=1) + "\n")
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
    label_pipe = load_pipeline(args.label_checkpoint, "cpu") if args.label_checkpoint else None
    out["cost"] = cost(pipe, label_pipe, args.cost_repeats, 8)
    print(f"seam without a switch {out['seam_without_switch']:.2f}; cost {json.dumps(out['cost'])}")
    out["videos"] = {"train": train_rows, "heldout": held_rows}
    write_text_atomic(args.json, json.dumps(out, indent=1) + "\n")
    if args.sheet:  # one row per mode: the chunks around the switch of the first video
        start = extra["at_frame"] - 2 * pipe.model.cfg.chunk_frames
        rows = [extra["videos"][m][0][start:start + 4 * pipe.model.cfg.chunk_frames] for m in
                ("none", "recache", "keep", "reset")]
        sheet = np.concatenate(rows).repeat(3, axis=1).repeat(3, axis=2)
        save_contact_sheet(sheet, args.sheet, frames_per_row=4 * pipe.model.cfg.chunk_frames)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
