"""Encode a video folder into latent shards once, so that training runs with no video decoding.

    python scripts/encode_latents.py --config configs/latent-demo.yaml --out data/shapes128-latents
    accelerate launch scripts/encode_latents.py --config ... --out ...   # videos split across processes / GPUs
    python scripts/encode_latents.py --config ... --out data/shapes128-latents --resume   # after a kill
    # then train from them:  python train/train.py --config configs/latent-demo.yaml data.latents=data/shapes128-latents

Reads ``data.root`` (and ``data.manifest``) and the ``codec`` section of the config; for a text model
(``model.text_encoder``) also its captions (``data.captions``, default ``captions.jsonl`` in the folder), encoded once
and stored beside the latents; frames are resized and
center-cropped to the pixel size ``model.resolution * codec factor``. Unreadable videos are skipped and counted.
Shards are written as they fill (``--shard-size``), so memory does not grow with the number of videos; ``--out``
must be a new or empty folder (nothing of yours is overwritten), and ``index.json`` appears last. Ctrl-C or SIGTERM
finishes the video in progress, closes the shard and prints the ``--resume`` command (exit status 130 or 143).
"""
import argparse
import shlex
import signal
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from ca2vdm.config import load_config
from ca2vdm.data.captions import find_captions
from ca2vdm.data.latent_encoding import encode_folder, parse_size
from ca2vdm.encoders.codec import build_codec, check_model_fits
from ca2vdm.encoders.text import build_text_encoder
from ca2vdm.errors import Ca2vdmError, SettingError
from ca2vdm.runtime.signals import Stopped, StopSignals


def shard_size(text: str) -> int:
    try:
        return parse_size(text)
    except SettingError as e:
        raise argparse.ArgumentTypeError(e.problem) from None


def interpreter() -> str:
    """This Python, as a command to type here (relative to the current folder when inside it)."""
    path = Path(sys.executable)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="training config (data, codec and model sections are used)")
    p.add_argument("--out", required=True, help="new (or empty) directory for the shards and index.json")
    p.add_argument("--shard-size", type=shard_size, default="256MB", help="close a shard once it holds this much "
                   "latent data (e.g. 256MB, 1GB); memory use is about one shard")
    p.add_argument("--resume", action="store_true", help="continue an encoding that was stopped, keeping its "
                   "finished shards (same config)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("--device", default=None, help="default: this process's accelerator (cuda:N), else cpu")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value")
    args = p.parse_intermixed_args()  # key=value overrides anywhere
    # cpu=True without CUDA makes a multi-process launch a gloo process group, as in training
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = args.device or state.device
    try:
        config = load_config(args.config, args.overrides)
        codec = build_codec(config.codec, device)
        check_model_fits(codec, config.model.in_channels)
        mc = config.model
        text_encoder = build_text_encoder(mc.text_encoder, mc.text_tokens)
        captions = find_captions(Path(config.data.root), config.data.captions) if text_encoder else None
        with StopSignals() as stop:
            index = encode_folder(config.data.root, args.out, codec, config.model.resolution * codec.factor,
                                  manifest=config.data.manifest, device=device, progress=not args.no_progress,
                                  shard_bytes=args.shard_size, resume=args.resume, rank=state.process_index,
                                  world=state.num_processes, barrier=state.wait_for_everyone, stop=stop,
                                  text_encoder=text_encoder, text_name=mc.text_encoder, captions=captions)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    except Stopped as e:
        if state.is_main_process:
            again = sys.argv + ([] if args.resume else ["--resume"])
            print(f"stopped by {signal.Signals(e.signum).name}: {e.stats['encoded']} of {e.stats['videos']} videos "
                  f"encoded, their shards closed in {args.out}; continue with: "
                  f"{shlex.join([interpreter(), *again])}", file=sys.stderr)
        sys.exit(128 + e.signum)
    if state.is_main_process:
        count, frames = len(index["videos"]), sum(v["frames"] for v in index["videos"])
        shards = len({v["shard"] for v in index["videos"]})
        print(f"wrote {count} video{'s' * (count != 1)} ({frames} frames of {index['channels']}x"
              f"{index['resolution']}^2 latents, {shards} shard{'s' * (shards != 1)}) to {args.out}; skipped "
              f"{len(index['skipped'])}")


if __name__ == "__main__":
    main()
