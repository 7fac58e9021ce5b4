"""Train our own per-frame autoencoder: ``ca2vdm train-autoencoder`` (also ``ca2vdm-train-autoencoder``;
ca2vdm/cli/train_autoencoder.py), every flag the same.

    accelerate launch train/train_autoencoder.py --config configs/ae-shapes128.yaml [key=value ...] [--resume latest]
"""
from ca2vdm.cli.train_autoencoder import main

if __name__ == "__main__":
    main()
