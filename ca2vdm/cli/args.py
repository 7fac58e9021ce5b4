"""What the command lines share: a parser with the tool's docstring as its help, argparse types for counts, and the
sampler's flags generated from its settings.

Torch-free: a parser is built and ``--help`` answers before torch loads.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ca2vdm.config import SamplerSettings, parse_lora
from ca2vdm.config.options import declared_fields
from ca2vdm.config.sampler import TEACACHE_THRESH
from ca2vdm.config.step_caches import parse_step_cache_options

# settings whose flag is not their name with dashes (for SettingError.for_cli)
FLAGS = {"step_cache_options": "--step-cache-opt", "num_chunks": "--chunks", "first_frames": "--first-frame"}


def new_parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """A tool's parser: its module docstring as the help, kept as written; ``prog`` is how the tool was called
    (``ca2vdm generate``; None: the script's file name)."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text: str) -> int:
    """argparse type of counts (chunks, ports, videos): an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of counts that may be 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """argparse type of ``--size HxW``: (height, width) in pixels."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) < 1 or int(width) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels (e.g. 480x832), got {text!r}")
    return int(height), int(width)


def add_base_flags(parser: argparse.ArgumentParser) -> None:
    """``--base``, ``--size`` and ``--offload-text-encoder``: generating from a downloaded Wan folder
    (ca2vdm/generation/wan_base.py)."""
    group = parser.add_argument_group("a downloaded Wan 2.1 folder (docs/models.md)")
    group.add_argument("--base", default=None, metavar="DIR",
                       help="a Wan 2.1 text-to-video folder (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, or Wan's own layout): "
                            "its VAE, UMT5 text encoder and tokenizer; --checkpoint is then the transformer in any "
                            "format (a Self-Forcing / CausVid / LongLive .pt, ...; default: the folder's own), sampled "
                            "as the known-model table says (ca2vdm/config/presets.py) unless the sampler flags say")
    group.add_argument("--size", type=frame_size, default=None, metavar="HxW",
                       help="frame height x width in pixels of a Wan model (default: the checkpoint's own; 480x832 "
                            "for Wan 1.3B)")
    group.add_argument("--offload-text-encoder", action="store_true",
                       help="keep the base's UMT5 text encoder (11 GB in bf16) on the CPU except while it encodes a "
                            "prompt")


def lora_spec(text: str) -> tuple[str, float]:
    """argparse type of ``--lora PATH[:SCALE]``: (path, scale), the scale 1 when none is given."""
    try:
        return parse_lora(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`~ca2vdm.config.SamplerSettings` (default: the checkpoint's recorded value),
    plus the older ``--teacache-thresh``."""
    group = parser.add_argument_group("sampler (default: what the checkpoint recorded)")
    for name, declared in declared_fields(SamplerSettings).items():
        if name == "step_cache_options":
            group.add_argument(FLAGS[name], dest=name, action="append", default=[], metavar="KEY=VALUE",
                               help="settings of the --step-cache policy, repeatable or comma-separated (e.g. "
                                    "interval=2,growth=1; docs/step-caching.md lists each policy's settings)")
        elif declared.choices:
            group.add_argument("--" + name.replace("_", "-"), choices=declared.choices, default=None,
                               help=declared.help)
        else:  # a number: its range is checked with the other settings, before any work, in one line
            group.add_argument("--" + name.replace("_", "-"), type=declared.kind, default=None,
                               metavar=name.upper(), help=f"{declared.help}; {declared.describe()}")
    group.add_argument("--teacache-thresh", type=float, default=None,
                       help=f"TeaCache's threshold: the older spelling of --step-cache-opt threshold=X; "
                            f"{TEACACHE_THRESH.describe()}")


def sampler_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler settings given on the command line (by field name); SettingError for bad step-cache settings."""
    names = [f.name for f in dataclasses.fields(SamplerSettings) if f.name != "step_cache_options"]
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.step_cache_options:
        overrides["step_cache_options"] = parse_step_cache_options(args.step_cache or "none", args.step_cache_options)
    return overrides
