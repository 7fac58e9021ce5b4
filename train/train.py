"""Train a causal video DiT: ``ca2vdm train`` (also ``ca2vdm-train``; ca2vdm/cli/train.py), every flag the same.

    accelerate launch train/train.py --config configs/tiny.yaml [key=value ...] [--resume latest|PATH]
"""
from ca2vdm.cli.train import main

if __name__ == "__main__":
    main()
