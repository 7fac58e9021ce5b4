"""Export a training checkpoint's EMA weights (with config metadata) to one small safetensors file.

    ca2vdm export runs/demo/checkpoints/step_003000 checkpoints/demo.safetensors
    ca2vdm export runs/latent-demo/checkpoints/step_004400 checkpoints/latent-demo.safetensors \
        --autoencoder checkpoints/ae-shapes128

A latent model's autoencoder must travel with it: ``--autoencoder DIR`` copies the autoencoder the checkpoint
recorded (its save_pretrained folder) to DIR and records DIR relative to the exported file, so the pair works from
any clone (``ca2vdm generate`` looks for the autoencoder beside the weights).

An existing dst is replaced only with ``--overwrite``; the source itself and any file inside a training checkpoint
folder are always refused (:mod:`ca2vdm.training.export`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ca2vdm.cli.args import new_parser
from ca2vdm.config import PRECISIONS
from ca2vdm.errors import CheckpointError, ExportError


def ship_autoencoder(src: str, dst: Path, directory: Path, overwrite: bool) -> dict:
    """Copy the recorded autoencoder folder to ``directory``; the codec metadata with its path relative to dst."""
    from ca2vdm.checkpoints.weights import metadata_of
    from ca2vdm.training.export import check_autoencoder_destination

    codec = metadata_of(src).codec
    if codec["kind"] == "pixel":
        sys.exit(f"{src} is a pixel model: it has no autoencoder to ship (drop --autoencoder)")
    if not Path(codec["path"]).is_dir():
        sys.exit(f"{src} recorded its autoencoder at {codec['path']}, which is not a directory here")
    check_autoencoder_destination(directory, codec["path"], overwrite)
    if directory.resolve() != Path(codec["path"]).resolve():
        shutil.copytree(codec["path"], directory, dirs_exist_ok=True)
    return {**codec, "path": os.path.relpath(directory, dst.parent)}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("src", what="the checkpoint being exported", help="checkpoint directory or .safetensors file")
    p.add_output("dst", replace=False, help="output .safetensors file (an existing one only with --overwrite)")
    p.add_argument("--dtype", choices=sorted(PRECISIONS), default="fp16", help="precision of the exported weights")
    p.add_output("--autoencoder", kind="folder", type=Path,
                 help="latent models: copy their autoencoder to this directory and record it relative to dst")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dst (never the source itself nor "
                                                            "a file inside a training checkpoint folder)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    from ca2vdm.checkpoints.weights import export_weights  # after the arguments: --help answers before torch loads
    from ca2vdm.runtime.device import DTYPES
    from ca2vdm.training.export import check_export_destination

    try:
        check_export_destination(args.src, args.dst, args.overwrite)
        extra = {"codec": ship_autoencoder(args.src, Path(args.dst), args.autoencoder, args.overwrite)} \
            if args.autoencoder else None
        out = export_weights(args.src, args.dst, DTYPES[args.dtype], extra)
    except (ExportError, CheckpointError) as e:
        sys.exit(f"error: {e.for_cli()}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)" + (f", autoencoder in {args.autoencoder}"
                                                               if args.autoencoder else ""))
