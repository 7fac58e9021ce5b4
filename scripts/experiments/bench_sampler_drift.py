"""How much a chunk darkens and changes colour per sampler setting (or checkpoint), teacher-forced and free-running.

    python scripts/experiments/bench_sampler_drift.py --chunks 20 --settings 16:1 32:1 16:3 8:3 \
        --json docs/results/sampler_drift.json

For a set of training videos (every ``--every``-th of ``--data``), the model continues each video's first frame for
``--chunks`` chunks with every setting ``steps:shift`` (the Euler sampler's step count and timestep shift), as the main
command does (unconditional, the checkpoint's other settings, KV cache):
* teacher-forced: every chunk is conditioned on the real frames before it, so its ratio to the real chunk is the
  error one chunk adds;
* free-running: every chunk is conditioned on the model's own chunks, so the errors compound.
Per chunk it prints the ratio of the generated chunks' mean brightness (pixels in [0, 1]) and contrast (pixel std)
to the real chunks' at the same frames, pooled over the videos (1 = no drift; the shapes move, but a training video
keeps its colour and size), and the shape's colour: per video, the mean colour of the foreground pixels
(``metrics.foreground_colour``) against the real chunk's (``metrics.shape_colour``), as the hue error (half the L1
distance of the chromaticities r, g, b / (r + g + b): 0 = the same hue, 1 = disjoint) and the difference per channel
(generated - real, pixels in [0, 1]), averaged over the videos where both chunks show the shape: a systematic bias
shows in the channel differences, a random walk only in the hue error. Same noise for every setting.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.cli.args import count, new_parser, number, seed
from ca2vdm.config import SamplerSettings
from ca2vdm.config.options import declared_fields
from ca2vdm.data.clips import VIDEO_EXTENSIONS, find_videos
from ca2vdm.evaluation.metrics import shape_colour
from ca2vdm.io.paths import DEFAULT_CHECKPOINT
from ca2vdm.io.results import write_results
from ca2vdm.io.video import read_video
from ca2vdm.sampling.pipeline import LongVideoPipeline

ROOT = Path(__file__).resolve().parents[2]

MODES = ("teacher", "free")


def setting(text: str) -> tuple[int, float]:
    """'16:3' -> (16 steps, shift 3.0), each checked as the sampler's setting is."""
    steps, sep, shift = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"a setting is steps:shift, e.g. 16:3, got {text!r}")
    declared = declared_fields(SamplerSettings)
    return number(declared["steps"])(steps), number(declared["shift"])(shift)


def brightness_contrast(frames: torch.Tensor) -> tuple[float, float]:
    """Mean and std of (B, C, T, H, W) pixels in [-1, 1], mapped to [0, 1]."""
    pixels = (frames.float() + 1) / 2
    return pixels.mean().item(), pixels.std().item()


def continue_videos(pipe: LongVideoPipeline, videos: torch.Tensor, chunks: int, teacher: bool,
                    seed: int) -> list[dict]:
    """Ratios to the real chunks, per chunk, of continuing every video's first frame. videos: (B, 3, T, H, W)."""
    frames = pipe.model.cfg.chunk_frames
    state = pipe.start(batch=videos.shape[0], seed=seed, first_frames=videos[:, :, :1])
    rows = []
    for k in range(chunks):
        real = videos[:, :, 1 + frames * k:1 + frames * (k + 1)]  # (B, 3, frames, H, W)
        made = pipe.next_chunk(state, commit_frames=real if teacher else None).frames
        (mb, mc), (rb, rc) = brightness_contrast(made), brightness_contrast(real)
        rows.append({"chunk": k, "brightness": mb / rb, "contrast": mc / rc, **shape_colour(made, real)})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = new_parser(__doc__)
    p.add_input("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="weights file (default: the shipped model)")
    p.add_input("--data", default="data/shapes", help="training videos (ca2vdm make-data)")
    p.add_argument("--every", type=count(1, 10 ** 6), default=8, help="take every n-th video of --data (default 8)")
    p.add_argument("--videos", type=count(1, 10 ** 5), default=24,
                   help="at most this many videos, continued as one batch")
    p.add_argument("--chunks", type=count(1, 10 ** 5), default=10,
                   help="chunks per video (the videos must be long enough)")
    p.add_argument("--settings", type=setting, nargs="+", default=None,
                   help="steps:shift pairs (default: 16:1 16:3)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the sampling noise (the same for every setting)")
    p.add_output("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    settings = args.settings or [setting("16:1"), setting("16:3")]

    model, meta = load_model(args.checkpoint)
    if not LongVideoPipeline.for_checkpoint(model, meta).pixel_space:
        raise SystemExit(f"{args.checkpoint} works on latents; this measurement compares pixels (a pixel model only)")
    files = sorted(find_videos(Path(args.data), VIDEO_EXTENSIONS))[::args.every][:args.videos]
    if not files:
        raise SystemExit(f"no videos under {args.data}: write them with ca2vdm make-data, or pass "
                         "--data")
    needed = 1 + args.chunks * model.cfg.chunk_frames
    clips = [read_video(f, size=model.cfg.resolution)[:, :needed] for f in files]  # (3, <= needed, H, W) each
    short = [f.name for f, c in zip(files, clips) if c.shape[1] < needed]
    if short:
        raise SystemExit(f"{len(short)} of the videos are shorter than the {needed} frames that --chunks "
                         f"{args.chunks} needs (e.g. {short[0]}): use fewer --chunks")
    videos = torch.stack(clips)  # (B, 3, T, H, W)
    results = []
    print(f"{len(files)} videos of {args.data}, {args.chunks} chunks; ratio of generated to real, per chunk")
    for steps, shift in settings:
        pipe = LongVideoPipeline.for_checkpoint(model, meta, steps=steps, shift=shift)
        for mode in MODES:
            rows = continue_videos(pipe, videos, args.chunks, mode == "teacher", args.seed)
            results.append({"steps": steps, "shift": shift, "mode": mode, "chunks": rows})
            for key in ("brightness", "contrast", "hue_error", "red", "green", "blue"):
                values = " ".join("  -  " if r[key] is None else f"{r[key]:.3f}" for r in rows)
                print(f"{steps:3d} steps, shift {shift:4.1f}, {mode:7s} {key:10s} {values}", flush=True)
    if args.json:
        write_results(args.json, {"checkpoint": args.checkpoint, "data": args.data, "videos": [f.name for f in files],
                                  "seed": args.seed, "threads": torch.get_num_threads(), "results": results},
                      [args.checkpoint, args.data], "json")


if __name__ == "__main__":
    main()
