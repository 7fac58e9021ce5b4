"""Fold a LoRA adapter into its base checkpoint: a plain checkpoint that loads and generates without the adapter.

    ca2vdm merge-lora checkpoints/demo.safetensors runs/demo-white/checkpoints/step_000300 \
        checkpoints/demo-white-merged.safetensors
    ca2vdm merge-lora BASE ADAPTER OUT --scale 0.5 --dtype fp32

The adapter must have been trained on BASE (refused otherwise, naming both). OUT gets BASE's metadata (sampler
settings, codec, calibrations) and the list of merged adapters, in BASE's precision unless --dtype says otherwise.
OUT is a .safetensors file, never BASE or ADAPTER, a file inside a training checkpoint folder, a folder, a device, a
pipe or a socket; an existing OUT is replaced only with --overwrite (the checks of ca2vdm export).
"""
from __future__ import annotations

import argparse
import sys

from ca2vdm.cli.args import new_parser, number
from ca2vdm.config import PRECISIONS
from ca2vdm.config.lora import LORA_SCALE
from ca2vdm.errors import CheckpointError, ExportError


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_input("base", what="the base checkpoint (BASE)",
                help="the checkpoint the adapter was trained on (.safetensors or checkpoint folder)")
    p.add_input("adapter", what="the adapter (ADAPTER)",
                help="a train.lora run's adapter.safetensors or checkpoint folder")
    p.add_output("out", replace=False, help="output .safetensors file (an existing one only with --overwrite)")
    p.add_argument("--scale", type=number(LORA_SCALE), default=1.0,
                   help=f"weight of the adapter (default 1): {LORA_SCALE.describe()}")
    p.add_argument("--dtype", choices=sorted(PRECISIONS), default=None, help="precision of OUT (default: BASE's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT (never BASE or ADAPTER)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    from ca2vdm.checkpoints.adapters import adapter_file, save_merged  # after the arguments: torch loads here
    from ca2vdm.runtime.device import DTYPES
    from ca2vdm.training.export import check_export_destination

    try:
        for source in (args.base, adapter_file(args.adapter)):  # OUT overwrites neither input
            check_export_destination(source, args.out, args.overwrite)
        out = save_merged(args.base, [(args.adapter, args.scale)], args.out,
                          DTYPES[args.dtype] if args.dtype else None)
    except (ExportError, CheckpointError) as e:
        sys.exit(f"error: {e.for_cli()}")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {args.base} + {args.scale:g} x {args.adapter}")
