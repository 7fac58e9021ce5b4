"""Write a tiny random Wan 2.1 folder, laid out as Wan-AI/Wan2.1-T2V-1.3B-Diffusers, with a Self-Forcing checkpoint of
its transformer beside its parts: to try ``--base`` (and the tests' and README's commands) without downloading 17 GB.

    .venv/bin/python scripts/make_tiny_wan.py outputs/wan-tiny
    .venv/bin/ca2vdm generate --base outputs/wan-tiny --checkpoint outputs/wan-tiny/self_forcing_dmd.pt \\
        --prompt "a red circle" --chunks 3 --size 32x32

The folder is written by diffusers' own ``WanPipeline(...).save_pretrained`` (ca2vdm/checkpoints/tiny_wan.py): random
weights, so its videos are noise-like; what it shows is the path from a downloaded folder to an mp4.
"""
from pathlib import Path

from ca2vdm.checkpoints.tiny_wan import write_self_forcing_pt, write_tiny_wan
from ca2vdm.cli.args import new_parser, seed


def main() -> None:
    p = new_parser(__doc__)
    p.add_output("out", kind="folder", type=Path, help="the folder to write (refused if it exists and is not empty)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random weights")
    args = p.parse_args()
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        p.error(f"{args.out} exists and is not an empty folder; give a new one")
    folder = write_tiny_wan(args.out, args.seed)
    checkpoint = write_self_forcing_pt(folder, folder / "self_forcing_dmd.pt", args.seed + 1)
    print(f"wrote the tiny Wan folder {folder} and its Self-Forcing checkpoint {checkpoint}")


if __name__ == "__main__":
    main()
