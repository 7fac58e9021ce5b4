"""Encode a video folder into latent shards once, so that training runs with no video decoding.

    ca2vdm encode-latents --config configs/latent-demo.yaml --out data/shapes128-latents
    accelerate launch -m ca2vdm.cli.main encode-latents --config ... --out ...   # videos split across processes
    ca2vdm encode-latents --config ... --out data/shapes128-latents --resume     # after a kill
    # then train from them:  ca2vdm train --config configs/latent-demo.yaml data.latents=data/shapes128-latents

Reads ``data.root`` (and ``data.manifest``) and the ``codec`` section of the config; for a text model
(``model.text_encoder``) also its captions (``data.captions``, default ``captions.jsonl`` in the folder), encoded once
and stored beside the latents; frames are resized and
center-cropped to the pixel size ``model.resolution * codec factor``. Unreadable videos are skipped and counted.
Shards are written as they fill (``--shard-size``), so memory does not grow with the number of videos; ``--out``
must be a new or empty folder (nothing of yours is overwritten), and ``index.json`` appears last. Ctrl-C or SIGTERM
finishes the video in progress, closes the shard and prints the ``--resume`` command (exit status 130 or 143).
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from ca2vdm.cli.args import new_parser
from ca2vdm.errors import Ca2vdmError, SettingError

COMMAND = "encode-latents"


def interpreter() -> str:
    """This Python, as a command to type here (relative to the current folder when inside it)."""
    path = Path(sys.executable)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def invocation() -> list[str]:
    """The words that started the ``ca2vdm`` command of this process, to print a command that runs it again:
    ``python -m ca2vdm.cli.main`` for the module, the console script as it was called otherwise."""
    started = sys.argv[0] if sys.argv and sys.argv[0] else "ca2vdm"
    if started.endswith(".py") or started == "-m":
        return [interpreter(), "-m", "ca2vdm.cli.main"]
    return [started]


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> tuple[argparse.Namespace, int]:
    """The arguments and the shard size in bytes (a bad size is a usage error, as a bad flag is)."""
    p = new_parser(__doc__, prog)
    p.add_input("--config", required=True, help="training config (data, codec and model sections are used)")
    p.add_output("--out", kind="folder", required=True, help="new (or empty) directory for the shards and index.json")
    p.add_argument("--shard-size", default="256MB", help="close a shard once it holds this much latent data (e.g. "
                   "256MB, 1GB); memory use is about one shard")
    p.add_argument("--resume", action="store_true", help="continue an encoding that was stopped, keeping its "
                   "finished shards (same config)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("--device", default=None, help="default: this process's accelerator (cuda:N), else cpu")
    p.add_argument("overrides", nargs="*", help="config overrides as key=value")
    args = p.parse_intermixed_args(argv)  # key=value overrides anywhere
    from ca2vdm.data.latent_encoding import parse_size  # after the arguments: --help answers before torch loads

    try:
        return args, parse_size(args.shard_size)
    except SettingError as e:
        p.error(f"argument --shard-size: {e.problem}")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, shard_bytes = parse_args(argv, prog)
    import torch
    from accelerate import PartialState

    from ca2vdm.config import load_config
    from ca2vdm.data.captions import find_captions
    from ca2vdm.data.latent_encoding import encode_folder
    from ca2vdm.encoders.codec import build_codec, check_model_fits
    from ca2vdm.encoders.text import build_text_encoder
    from ca2vdm.runtime.signals import Stopped, StopSignals

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
                                  shard_bytes=shard_bytes, resume=args.resume, rank=state.process_index,
                                  world=state.num_processes, barrier=state.wait_for_everyone, stop=stop,
                                  text_encoder=text_encoder, text_name=mc.text_encoder, captions=captions)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli()}")
    except Stopped as e:
        if state.is_main_process:
            again = [*invocation(), COMMAND, *argv] + ([] if args.resume else ["--resume"])
            print(f"stopped by {signal.Signals(e.signum).name}: {e.stats['encoded']} of {e.stats['videos']} videos "
                  f"encoded, their shards closed in {args.out}; continue with: {shlex.join(again)}", file=sys.stderr)
        sys.exit(128 + e.signum)
    if state.is_main_process:
        count, frames = len(index["videos"]), sum(v["frames"] for v in index["videos"])
        shards = len({v["shard"] for v in index["videos"]})
        print(f"wrote {count} video{'s' * (count != 1)} ({frames} frames of {index['channels']}x"
              f"{index['resolution']}^2 latents, {shards} shard{'s' * (shards != 1)}) to {args.out}; skipped "
              f"{len(index['skipped'])}")
