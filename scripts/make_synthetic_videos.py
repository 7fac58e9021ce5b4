"""Write a synthetic bouncing-shapes video dataset (mp4 + labels.jsonl + classes.json).

    python scripts/make_synthetic_videos.py --out data/shapes --num-videos 200 --frames 128 --size 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ca2vdm.data.synthetic import SHAPES, write_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-videos", type=int, default=200, help="how many videos to write")
    parser.add_argument("--frames", type=int, default=128, help="frames per video")
    parser.add_argument("--size", type=int, default=32, help="frame height and width in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of shapes, colours and motions")
    parser.add_argument("--fps", type=int, default=8, help="frame rate written into the mp4 files")
    args = parser.parse_args(argv)
    count = write_dataset(args.out, args.num_videos, args.frames, args.size, args.seed, fps=args.fps)
    print(
        f"wrote {count} video{'s' * (count != 1)} ({args.frames} frames, {args.size}x{args.size}, {args.fps} fps, "
        f"classes {', '.join(SHAPES)}) to {args.out}"
    )


if __name__ == "__main__":
    main()
