"""Write a synthetic bouncing-shapes video dataset (mp4 + labels.jsonl + classes.json).

    ca2vdm make-data --out data/shapes --num-videos 200 --frames 128 --size 32
    ca2vdm make-data --out data/shapes-white --colour 255,255,255  # a colour PALETTE lacks
    ca2vdm make-data --out data/captioned --captions   # captions.jsonl + held_out.json
    ca2vdm make-data --out data/shapes --num-videos 20 --overwrite   # replace the dataset written there before

With --captions each video shows one shape drifting across a wrap-around frame, described by a caption ("a small
blue triangle drifting left slowly"); the colour-shape pairs of held_out.json never appear (ca2vdm/data/captioned.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ca2vdm.cli.args import count, new_parser, rgb, seed
from ca2vdm.errors import Ca2vdmError

MIN_SIZE, MAX_SIZE = 8, 1024  # frame sides a shape is drawn in (4x supersampled: a 1024-pixel frame is 64 MB)
MAX_VIDEOS, MAX_FRAMES = 1_000_000, 100_000


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__, prog)
    parser.add_output("--out", kind="folder", type=Path, required=True,
                      help="output folder: new or empty (an earlier dataset here is replaced only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset this tool wrote into --out before (never any other file)")
    parser.add_argument("--num-videos", type=count(1, MAX_VIDEOS), default=200,
                        help=f"how many videos to write, 1 .. {MAX_VIDEOS}")
    parser.add_argument("--frames", type=count(1, MAX_FRAMES), default=128,
                        help=f"frames per video, 1 .. {MAX_FRAMES}")
    parser.add_argument("--size", type=count(MIN_SIZE, MAX_SIZE), default=32,
                        help=f"frame height and width in pixels, {MIN_SIZE} .. {MAX_SIZE}")
    parser.add_argument("--seed", type=seed, default=0, help="seed of shapes, colours and motions, 0 .. 2**64 - 1")
    parser.add_argument("--fps", type=count(1, 240), default=8, help="frame rate written into the mp4 files, 1 .. 240")
    parser.add_argument("--colour", type=rgb, default=None, metavar="R,G,B",
                        help="paint every shape this colour (0-255 each) instead of the palette's eight")
    parser.add_argument("--captions", action="store_true",
                        help="captioned drifting shapes for a text model (captions.jsonl) instead of labelled ones")
    args = parser.parse_args(argv)
    if args.captions and args.colour is not None:
        parser.error("--colour paints every shape one colour, but --captions names each shape's colour from the "
                     "palette; leave out one of them")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    from ca2vdm.data.captioned import HELD_OUT, write_captioned_dataset  # after the arguments
    from ca2vdm.data.synthetic import SHAPES, start_dataset, write_dataset

    try:
        start_dataset(args.out, args.overwrite)  # before any video: an existing folder is refused or emptied
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    if args.captions:
        count = write_captioned_dataset(args.out, args.num_videos, args.frames, args.size, args.seed, fps=args.fps)
        held = ", ".join(f"{c} {s}" for c, s in HELD_OUT)
        print(f"wrote {count} captioned videos ({args.frames} frames, {args.size}x{args.size}; held out: {held}) "
              f"to {args.out}")
        return
    count = write_dataset(args.out, args.num_videos, args.frames, args.size, args.seed, fps=args.fps,
                          colour=args.colour)
    print(
        f"wrote {count} video{'s' * (count != 1)} ({args.frames} frames, {args.size}x{args.size}, {args.fps} fps, "
        f"classes {', '.join(SHAPES)}) to {args.out}"
    )
