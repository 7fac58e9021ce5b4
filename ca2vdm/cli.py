"""The command line the trainers share (``train/train.py``, ``train/train_autoencoder.py``): ``key=value`` overrides
anywhere among the flags, a config refused when it lacks the section the trainer trains, a warning when a launch
asked for more processes than it started, and one line (no traceback) for every expected way a run ends early.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from accelerate import PartialState
from omegaconf import OmegaConf

from .checkpoint import CheckpointError, CheckpointWriteError, RunLockedError
from .config import Config, ConfigError, load_config
from .data import DataError
from .run_guard import Preempted
from .training import DiffusionTask, NonFiniteLossError, train
from .write_errors import describe_write_error, is_disk_full

RUN_ERRORS = (DataError, CheckpointError, CheckpointWriteError, NonFiniteLossError, RunLockedError)  # exit 1
# section -> (the trainer that needs it, what such a config is, a shipped example)
SECTIONS = {"model": ("train/train.py", "a video-model config", "configs/tiny.yaml"),
            "autoencoder": ("train/train_autoencoder.py", "an autoencoder config", "configs/ae-tiny.yaml")}


def positive_int(text: str) -> int:
    """argparse type of counts (chunks, ports, videos): an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def trainer_parser(doc: str, config_help: str) -> argparse.ArgumentParser:
    """--config, --resume, --no-progress and the ``key=value`` overrides of a trainer. Parse with
    ``parse_intermixed_args``, which takes overrides before, between and after the flags (``parse_args`` refuses the
    ones after a flag as 'unrecognized arguments')."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--resume", default=None, help="'latest' (newest checkpoint in train.output_dir) or a "
                        "checkpoint directory")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, anywhere on the line, e.g. "
                        "train.max_steps=100")
    return parser


def check_section(path: str | Path, overrides: list[str], section: str) -> None:
    """Raise ConfigError unless the YAML file or an override gives ``section`` (the part of the config the trainer
    trains; everything else has defaults, so a config for the other trainer would train a default model)."""
    given = {str(key) for key in OmegaConf.load(path)} | {o.split("=", 1)[0].split(".")[0].strip() for o in overrides}
    if section in given:
        return
    trainer, kind, example = SECTIONS[section]
    other = next((s for s in SECTIONS if s != section and s in given), None)
    what = f"it is {SECTIONS[other][1]} ({other} section), for {SECTIONS[other][0]}; " if other else ""
    raise ConfigError(f"config {path} has no {section} section, which {trainer} trains: {what}pass {kind} "
                      f"(e.g. {example}) or add a {section} section")


def load_trainer_config(parser: argparse.ArgumentParser, args: argparse.Namespace, section: str) -> Config:
    """The validated config of ``args``; a bad one, or one without ``section``, exits 2 with one line."""
    try:
        config = load_config(args.config, args.overrides)
        check_section(args.config, args.overrides, section)
    except ConfigError as e:  # exit 2, like argparse's own usage errors
        parser.exit(2, f"error: {e}\n")
    return config


def requested_processes(parent: int | None = None) -> int:
    """The ``--num_processes`` of the ``accelerate launch`` that started this process (1 if none)."""
    try:
        words = Path(f"/proc/{parent or os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return 1
    if not any("accelerate" in w for w in words) or not any(w == "launch" or w.endswith(".launch") for w in words):
        return 1
    for i, word in enumerate(words):
        name, _, value = word.partition("=")
        if name.replace("-", "_").startswith("__num_p"):  # argparse also takes a prefix: --num_proc 2
            value = value or (words[i + 1] if i + 1 < len(words) else "")
            return int(value) if value.isdigit() else 1
    return 1


def launch_warning(environ: dict = os.environ, parent: int | None = None) -> str | None:
    """What to do when ``accelerate launch`` was asked for several processes but started this one alone:
    ``--cpu --num_processes N`` runs one process unless given an MPI hostfile."""
    requested = requested_processes(parent)
    started = next((int(environ[k]) for k in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE") if k in environ), 1)
    if requested <= started:
        return None
    script = sys.argv[0] if sys.argv and sys.argv[0] else "train/train.py"
    return (f"warning: accelerate launch asked for {requested} processes but started {started} (with --cpu it starts "
            f"one unless given an MPI hostfile); for {requested} processes on the CPU run: CUDA_VISIBLE_DEVICES= "
            f"accelerate launch --multi_gpu --num_processes {requested} {script} ...")


def run_trainer(parser: argparse.ArgumentParser, args: argparse.Namespace, config: Config,
                task_type=DiffusionTask) -> Path:
    """Train ``config``; every expected failure exits with one line on each rank (config 2, data or checkpoint 1, a
    full disk 1); a stop signal exits 128 + its number after the checkpoint, printed by the main rank only."""
    warning = launch_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        return train(config, resume=args.resume, progress_bar=not args.no_progress, task_type=task_type)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    except RUN_ERRORS as e:
        parser.exit(1, f"error: {e}\n")
    except Preempted as e:
        if PartialState().is_main_process:
            print(e, file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except OSError as e:  # e.g. the metrics log or config.yaml on a full disk
        if not is_disk_full(e, config.train.output_dir):
            raise
        problem, fix = describe_write_error(e, config.train.output_dir, "another train.output_dir")
        parser.exit(1, f"error: {problem} while training; checkpoints already saved are intact. {fix}, then rerun "
                       "with --resume latest\n")
