"""Distil a few-step causal student from a video model: ``ca2vdm distill`` (also ``ca2vdm-distill``;
ca2vdm/cli/distill.py), every flag the same.

    accelerate launch train/distill.py --config configs/distill-demo.yaml [key=value ...] [--resume latest|PATH]
"""
from ca2vdm.cli.distill import main

if __name__ == "__main__":
    main()
