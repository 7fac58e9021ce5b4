"""Write a synthetic bouncing-shapes video dataset (mp4 + labels.jsonl + classes.json).

    ca2vdm make-data --out data/shapes --num-videos 200 --frames 128 --size 32
    ca2vdm make-data --out data/shapes-white --colour 255,255,255  # a colour PALETTE lacks
    ca2vdm make-data --out data/captioned --captions   # captions.jsonl + held_out.json

With --captions each video shows one shape drifting across a wrap-around frame, described by a caption ("a small
blue triangle drifting left slowly"); the colour-shape pairs of held_out.json never appear (ca2vdm/data/captioned.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ca2vdm.cli.args import new_parser


def _rgb(text: str) -> tuple[int, int, int]:
    values = text.split(",")
    if len(values) != 3 or not all(v.strip().isdigit() and int(v) <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"expected R,G,B with each 0-255 (e.g. 255,255,255), got {text!r}")
    return tuple(int(v) for v in values)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = new_parser(__doc__, prog)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-videos", type=int, default=200, help="how many videos to write")
    parser.add_argument("--frames", type=int, default=128, help="frames per video")
    parser.add_argument("--size", type=int, default=32, help="frame height and width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of shapes, colours and motions")
    parser.add_argument("--fps", type=int, default=8, help="frame rate written into the mp4 files")
    parser.add_argument("--colour", type=_rgb, default=None, metavar="R,G,B",
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
    from ca2vdm.data.synthetic import SHAPES, write_dataset

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
