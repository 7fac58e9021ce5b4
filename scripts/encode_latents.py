"""Encode a video folder into latent shards once, so that training runs with no video decoding.

    python scripts/encode_latents.py --config configs/latent-demo.yaml --out data/shapes128-latents
    # then train from them:  python train/train.py --config configs/latent-demo.yaml data.latents=data/shapes128-latents

Reads ``data.root`` (and ``data.manifest``) and the ``codec`` section of the config; frames are resized and
center-cropped to the pixel size ``model.resolution * codec factor``. Unreadable videos are skipped and counted.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from ca2vdm.codec import CodecError, build_codec, check_model_fits  # noqa: E402
from ca2vdm.config import ConfigError, load_config  # noqa: E402
from ca2vdm.data import DataError  # noqa: E402
from ca2vdm.latents import encode_folder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="training config (data, codec and model sections are used)")
    p.add_argument("--out", required=True, help="new directory for the shards and index.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value")
    args = p.parse_intermixed_args()  # key=value overrides anywhere
    try:
        config = load_config(args.config, args.overrides)
        codec = build_codec(config.codec, args.device)
        check_model_fits(codec, config.model.in_channels)
        index = encode_folder(config.data.root, args.out, codec, config.model.resolution * codec.factor,
                              manifest=config.data.manifest, device=args.device)
    except (ConfigError, CodecError, DataError) as e:
        sys.exit(f"error: {e}")
    frames = sum(v["frames"] for v in index["videos"])
    print(f"wrote {len(index['videos'])} videos ({frames} frames of {index['channels']}x{index['resolution']}^2 "
          f"latents) to {args.out}; skipped {len(index['skipped'])}")


if __name__ == "__main__":
    main()
