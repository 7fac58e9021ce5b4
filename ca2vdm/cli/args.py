"""What the command lines share: a parser with the tool's docstring as its help whose outputs, inputs and numbers
are declared (:class:`ToolParser`), and the sampler's flags generated from its settings.

One rule for every tool, the ``ca2vdm`` subcommands and the scripts alike, checked once the arguments are parsed,
before any work: an output (:meth:`ToolParser.add_output`) destroys nothing (:mod:`ca2vdm.io.paths`: never an input of
the tool, a folder, a device, a pipe or a socket; an output folder is never a file); a number
(:meth:`ToolParser.add_setting`, or ``type=number(Declared(...))``) is finite and in its declared range, as every
setting of :mod:`ca2vdm.config.options` is. A refusal is one line, ``error: --flag VALUE: problem``, exit status 1
(usage errors, as argparse's, 2).

Torch-free: a parser is built and ``--help`` answers before torch loads.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ca2vdm.config import SamplerSettings, parse_lora
from ca2vdm.config.options import REFUSED, Declared, declared_fields
from ca2vdm.config.sampler import SEED, TEACACHE_THRESH
from ca2vdm.config.step_caches import parse_step_cache_options
from ca2vdm.errors import SettingError, opt
from ca2vdm.io.paths import check_not_an_input, check_output_folder, check_writable_file

# settings whose flag is not their name with dashes (for SettingError.for_cli)
FLAGS = {"step_cache_options": "--step-cache-opt", "num_chunks": "--chunks", "first_frames": "--first-frame"}


OUTPUT_KINDS = ("file", "folder", "video")  # video: generate's --out, checked by io.paths.check_paths before work


def number(declared: Declared) -> Callable[[str], Any]:
    """argparse type of a flag declared as a setting is: its kind (an integral value for an int), finite, in its
    range; argparse's one-line usage error naming the flag and what it accepts otherwise."""
    def parse(text: str) -> Any:
        value = declared.coerce(text)
        if value is REFUSED:
            raise argparse.ArgumentTypeError(f"must be {declared.describe()}, got {text!r}")
        return value
    parse.declared = declared  # what tests/test_tool_outputs.py looks for on every number flag
    return parse


def count(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """argparse type of a count: a whole number in low .. high (no upper bound: None)."""
    return number(Declared(int, "a count", low=low, high=high))


positive_int = count(1)       # chunks, videos, steps
non_negative_int = count(0)   # counts that may be 0
seed = number(SEED)           # 0 .. 2**64 - 1


class ToolParser(argparse.ArgumentParser):
    """A tool's parser with its outputs, inputs and number flags declared; see the module docstring. Outputs and
    inputs are checked by :meth:`parse_args` and :meth:`parse_intermixed_args` after parsing."""

    def add_output(self, *flags: str, kind: str = "file", replace: bool = True, **kwargs: Any) -> argparse.Action:
        """An argument naming what the tool writes: a ``file`` (never an input, a folder, a device, a pipe or a
        socket; an existing one is replaced, or only with ``--overwrite`` when not ``replace``), a ``folder`` to
        write files into (never an input, or inside one, or a file), or generate's ``video``."""
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"kind must be one of {OUTPUT_KINDS}, got {kind!r}")
        action = self.add_argument(*flags, **kwargs)
        action.output, action.replace = kind, replace
        return action

    def add_input(self, *flags: str, what: str | None = None, **kwargs: Any) -> argparse.Action:
        """An argument naming something the tool reads (a checkpoint, a dataset): no output may be it or lie inside
        it. ``what`` names it in messages (default: its name and flag, "the checkpoint (--checkpoint)")."""
        action = self.add_argument(*flags, **kwargs)
        action.input, action.what = True, what
        return action

    def add_setting(self, *flags: str, default: Any, help: str, kind: type | None = None,
                    **declared: Any) -> argparse.Action:
        """A number flag declared as a setting (:class:`~ca2vdm.config.options.Declared`: its kind, range, help);
        its help ends with what it accepts."""
        rule = Declared(kind or type(default), help, **declared)
        return self.add_argument(*flags, type=number(rule), default=default, help=f"{help} ({rule.describe()})")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        return self.check(super().parse_args(args, namespace))

    def parse_intermixed_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        return self.check(super().parse_intermixed_args(args, namespace))

    def check(self, args: argparse.Namespace) -> argparse.Namespace:
        """Refuse (one line, exit 1) an output that would destroy something; ``args`` otherwise."""
        names = self.flag_names()
        inputs = {a.what or f"the {a.dest.replace('_', ' ')} ({names[a.dest]})": _paths(getattr(args, a.dest))
                  for a in self._actions if getattr(a, "input", False)}
        seen: dict[Path, str] = {}
        try:
            for action in (a for a in self._actions if getattr(a, "output", None) in ("file", "folder")):
                for path in map(Path, _paths(getattr(args, action.dest))):
                    if action.output == "folder":
                        check_output_folder(path, action.dest)
                    else:
                        check_writable_file(path, action.dest)
                    for what, sources in inputs.items():
                        check_not_an_input(action.dest, path, sources, what)
                    if action.output == "file" and not action.replace:
                        check_writable_file(path, action.dest, overwrite=getattr(args, "overwrite", False))
                    other = seen.setdefault(path.resolve(), action.dest)
                    if other != action.dest:
                        raise SettingError(action.dest, path, f"is also {opt(other)}; give each output its own path")
        except SettingError as e:
            sys.exit(f"error: {e.for_cli(names)}")
        return args

    def flag_names(self) -> dict[str, str]:
        """Each argument's name in messages: its first flag, or a positional's metavar (``OUT``)."""
        return {a.dest: a.option_strings[0] if a.option_strings else a.metavar or a.dest.upper()
                for a in self._actions}


def _paths(value: Any) -> list[str]:
    """The paths an argument holds: none (unset), one, or a list (``nargs``)."""
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def new_parser(doc: str | None, prog: str | None = None) -> ToolParser:
    """A tool's parser: its module docstring as the help, kept as written; ``prog`` is how the tool was called
    (``ca2vdm generate``; None: the script's file name)."""
    return ToolParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def rgb(text: str) -> tuple[int, int, int]:
    """argparse type of a colour: R,G,B, each a whole number in 0 .. 255."""
    values = text.split(",")
    if len(values) != 3 or not all(v.strip().isdigit() and int(v) <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"expected R,G,B with each 0-255 (e.g. 255,255,255), got {text!r}")
    return tuple(int(v) for v in values)


def frame_size(text: str) -> tuple[int, int]:
    """argparse type of ``--size HxW``: (height, width) in pixels."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or int(height) < 1 or int(width) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels (e.g. 480x832), got {text!r}")
    return int(height), int(width)


def add_base_flags(parser: ToolParser) -> None:
    """``--base``, ``--size`` and ``--offload-text-encoder``: generating from a downloaded Wan folder
    (ca2vdm/generation/wan_base.py)."""
    parser.add_input("--base", default=None, metavar="DIR", what="the Wan folder (--base)",
                     help="a Wan 2.1 text-to-video folder (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, or Wan's own layout): "
                          "its VAE, UMT5 text encoder and tokenizer; --checkpoint is then the transformer in any "
                          "format (a Self-Forcing / CausVid / LongLive .pt, ...; default: the folder's own), sampled "
                          "as the known-model table says (ca2vdm/config/presets.py) unless the sampler flags say")
    parser.add_argument("--size", type=frame_size, default=None, metavar="HxW",
                        help="frame height x width in pixels of a Wan model (default: the checkpoint's own; 480x832 "
                             "for Wan 1.3B)")
    parser.add_argument("--offload-text-encoder", action="store_true",
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
        else:  # a number: its kind and range checked as the setting's
            group.add_argument("--" + name.replace("_", "-"), type=number(declared), default=None,
                               metavar=name.upper(), help=f"{declared.help}; {declared.describe()}")
    group.add_argument("--teacache-thresh", type=number(TEACACHE_THRESH), default=None,
                       help=f"TeaCache's threshold: the older spelling of --step-cache-opt threshold=X; "
                            f"{TEACACHE_THRESH.describe()}")


def sampler_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler settings given on the command line (by field name); SettingError for bad step-cache settings."""
    names = [f.name for f in dataclasses.fields(SamplerSettings) if f.name != "step_cache_options"]
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.step_cache_options:
        overrides["step_cache_options"] = parse_step_cache_options(args.step_cache or "none", args.step_cache_options)
    return overrides
