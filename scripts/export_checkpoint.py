"""Export a training checkpoint's EMA weights (with config metadata) to one small safetensors file.

    python scripts/export_checkpoint.py runs/demo/checkpoints/step_003000 checkpoints/demo.safetensors
    python scripts/export_checkpoint.py runs/latent-demo/checkpoints/step_004400 checkpoints/latent-demo.safetensors \
        --autoencoder checkpoints/ae-shapes128

A latent model's autoencoder must travel with it: ``--autoencoder DIR`` copies the autoencoder the checkpoint
recorded (its save_pretrained folder) to DIR and records DIR relative to the exported file, so the pair works from
any clone (``infer/long_video.py`` looks for the autoencoder beside the weights).

An existing dst is replaced only with ``--overwrite``; the source itself and any file inside a training checkpoint
folder are always refused (:mod:`ca2vdm.export`).
"""
import argparse
import os
import shutil
import sys
from pathlib import Path

from ca2vdm.checkpoints.weights import export_weights, metadata_of
from ca2vdm.errors import CheckpointError, ExportError
from ca2vdm.runtime.device import DTYPES
from ca2vdm.training.export import check_autoencoder_destination, check_export_destination


def ship_autoencoder(src: str, dst: Path, directory: Path, overwrite: bool) -> dict:
    """Copy the recorded autoencoder folder to ``directory``; the codec metadata with its path relative to dst."""
    codec = metadata_of(src).codec
    if codec["kind"] == "pixel":
        sys.exit(f"{src} is a pixel model: it has no autoencoder to ship (drop --autoencoder)")
    if not Path(codec["path"]).is_dir():
        sys.exit(f"{src} recorded its autoencoder at {codec['path']}, which is not a directory here")
    check_autoencoder_destination(directory, codec["path"], overwrite)
    if directory.resolve() != Path(codec["path"]).resolve():
        shutil.copytree(codec["path"], directory, dirs_exist_ok=True)
    return {**codec, "path": os.path.relpath(directory, dst.parent)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="checkpoint directory or .safetensors file")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="precision of the exported weights")
    p.add_argument("--autoencoder", type=Path, help="latent models: copy their autoencoder to this directory and "
                                                   "record it relative to dst")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dst (never the source itself nor "
                                                            "a file inside a training checkpoint folder)")
    args = p.parse_args()
    try:
        check_export_destination(args.src, args.dst, args.overwrite)
        extra = {"codec": ship_autoencoder(args.src, Path(args.dst), args.autoencoder, args.overwrite)} \
            if args.autoencoder else None
        out = export_weights(args.src, args.dst, DTYPES[args.dtype], extra)
    except (ExportError, CheckpointError) as e:
        sys.exit(f"error: {e.for_cli()}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)" + (f", autoencoder in {args.autoencoder}"
                                                               if args.autoencoder else ""))
