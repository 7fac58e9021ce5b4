"""Export a training checkpoint's EMA weights (with config metadata) to one small safetensors file.

    python scripts/export_checkpoint.py runs/demo/checkpoints/step_003000 checkpoints/demo.safetensors
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca2vdm.checkpoint import export_weights  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="checkpoint directory or .safetensors file")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    args = p.parse_args()
    out = export_weights(args.src, args.dst, DTYPES[args.dtype])
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
