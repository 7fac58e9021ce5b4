"""Fit TeaCache's rescaling polynomial for a checkpoint and store it in the checkpoint's metadata.

    python scripts/calibrate_teacache.py --checkpoint checkpoints/demo.safetensors

Runs full sampling (every step computed) for several seeds and labels, records at each step the relative L1
change of the first block's modulated input and of the block stack's output, fits a 4th-order polynomial
(output change as a function of input change), prints the fit quality, and writes the coefficients into the
weights file (key ``teacache_coefficients``), where ``--step-cache teacache`` finds them.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca2vdm.checkpoint import load_model, update_metadata  # noqa: E402
from ca2vdm.pipeline import LongVideoPipeline  # noqa: E402
from ca2vdm.step_cache import TeaCacheRecorder, fit_polynomial  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="weights file or training checkpoint directory")
    p.add_argument("--seeds", type=int, default=8, help="videos to sample")
    p.add_argument("--chunks", type=int, default=4, help="chunks per video")
    p.add_argument("--degree", type=int, default=4)
    p.add_argument("--dry-run", action="store_true", help="print the fit, do not write the checkpoint")
    args = p.parse_args()

    model, meta = load_model(args.checkpoint)
    recorder = TeaCacheRecorder()
    pipe = LongVideoPipeline.from_metadata(model, meta, step_cache=recorder)
    classes = model.cfg.num_classes
    for seed in range(args.seeds):
        label = seed % classes if classes else None
        for _ in pipe.generate(args.chunks, label=label, seed=seed):
            pass
    coefficients, r2 = fit_polynomial(recorder.pairs, args.degree)
    x, y = np.array(recorder.pairs).T
    print(f"{len(recorder.pairs)} (input change, output change) pairs; input change {x.min():.4f}..{x.max():.4f}, "
          f"output change {y.min():.4f}..{y.max():.4f}")
    print(f"polynomial (highest power first): {json.dumps([round(c, 6) for c in coefficients])}; R^2 = {r2:.4f}")
    if not args.dry_run:
        path = update_metadata(args.checkpoint, {"teacache_coefficients": coefficients,
                                                 "teacache_fit": {"r2": r2, "pairs": len(recorder.pairs)}})
        print(f"stored in {path}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
