"""The command line the trainers share (``train/train.py``, ``train/train_autoencoder.py``, ``train/distill.py``):
``key=value`` overrides anywhere among the flags, a config refused when it lacks the section the trainer trains, a
resumed run that continues with the settings it was started with (its ``config.yaml``; the command line's overrides
change them, and are named), a warning when a launch asked for more processes than it started, and one line (no
traceback) for every expected way a run ends early.

Each trainer is a :class:`Trainer`: the section it trains, its config type and its task
(:class:`ca2vdm.training.task.Task`), which is imported only when the run starts, after the arguments are parsed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from omegaconf import OmegaConf

from ca2vdm.cli.args import new_parser
from ca2vdm.config import AutoencoderTrainingConfig, Config, DistillTrainingConfig, RunConfig, load_config
from ca2vdm.errors import Ca2vdmError, ConfigError


@dataclass(frozen=True)
class Trainer:
    """A trainer: the config section it trains, its config type, its task (``module:Class``, imported when the run
    starts) and how its config is named in messages."""
    section: str
    schema: type[RunConfig]
    task: str
    script: str
    kind: str
    example: str

    def task_type(self) -> type:
        module, _, name = self.task.partition(":")
        return getattr(import_module(module), name)


TRAINERS = {t.section: t for t in (
    Trainer("model", Config, "ca2vdm.training.diffusion_task:DiffusionTask", "train/train.py",
            "a video-model config", "configs/tiny.yaml"),
    Trainer("autoencoder", AutoencoderTrainingConfig, "ca2vdm.training.autoencoder:AutoencoderTask",
            "train/train_autoencoder.py", "an autoencoder config", "configs/ae-tiny.yaml"),
    Trainer("distill", DistillTrainingConfig, "ca2vdm.training.distill_task:DistillTask", "train/distill.py",
            "a distillation config", "configs/distill-demo.yaml"))}


def trainer_parser(doc: str, config_help: str, prog: str | None = None) -> argparse.ArgumentParser:
    """--config, --resume, --no-progress and the ``key=value`` overrides of a trainer. Parse with
    ``parse_intermixed_args``, which takes overrides before, between and after the flags (``parse_args`` refuses the
    ones after a flag as 'unrecognized arguments')."""
    parser = new_parser(doc, prog)
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--resume", default=None, help="'latest' (newest checkpoint in train.output_dir) or a "
                        "checkpoint directory")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, anywhere on the line, e.g. "
                        "train.max_steps=100")
    return parser


def check_section(path: str | Path, overrides: list[str], section: str) -> None:
    """Raise ConfigError unless the YAML file or an override gives ``section`` (the part of the config the trainer
    trains; everything else has defaults, so a config for another trainer would train a default model)."""
    try:
        in_file = {str(key) for key in OmegaConf.load(path)}
    except Exception:  # a missing or broken file: load_config says what is wrong with it
        return
    given = in_file | {o.split("=", 1)[0].split(".")[0].strip() for o in overrides}
    if section in given:
        return
    trainer = TRAINERS[section]
    other = next((TRAINERS[s] for s in TRAINERS if s != section and s in given), None)
    what = f"it is {other.kind} ({other.section} section), for {other.script}; " if other else ""
    raise ConfigError(f"config {path} has no {section} section, which {trainer.script} trains: {what}pass "
                      f"{trainer.kind} (e.g. {trainer.example}) or add a {section} section")


def load_trainer_config(parser: argparse.ArgumentParser, args: argparse.Namespace, section: str) -> RunConfig:
    """The validated config of ``args`` for the trainer of ``section``; a bad one, or one without ``section``,
    exits 2 with one line."""
    try:
        check_section(args.config, args.overrides, section)
        config = load_config(args.config, args.overrides, TRAINERS[section].schema)
        if args.resume:
            config = resumed_config(config, args, TRAINERS[section].schema)
        return config
    except ConfigError as e:  # exit 2, like argparse's own usage errors
        parser.exit(2, f"error: {e.for_cli()}\n")


def resumed_config(config: RunConfig, args: argparse.Namespace, schema: type[RunConfig]) -> RunConfig:
    """The config a ``--resume`` continues with: the run's own (``train.output_dir/config.yaml``, as it was started,
    its ``key=value`` overrides included) with this command line's overrides applied; ``config`` (the YAML file and
    the overrides) for a folder without one. The main rank says which settings an override changes, and which
    settings of the YAML file differ from the run's (the run's are kept)."""
    recorded = Path(config.train.output_dir) / "config.yaml"
    if not recorded.is_file():
        return config
    run = load_config(recorded, [], schema)
    resumed = load_config(recorded, [*args.overrides, f"train.output_dir={config.train.output_dir}"], schema)
    given = {o.split("=", 1)[0].strip() for o in args.overrides}
    ours, theirs, from_file = _flat(resumed), _flat(run), _flat(config)
    changed = [f"{k}={ours[k]!r} (the run's: {theirs.get(k)!r})" for k in ours
               if k in given and ours[k] != theirs.get(k) and k != "train.output_dir"]
    kept = [f"{k}={theirs[k]!r} ({args.config}: {from_file[k]!r})" for k in theirs
            if k not in given and from_file.get(k) != theirs[k] and k != "train.output_dir"]
    if main_rank():
        print(f"resuming {config.train.output_dir} with the settings it was started with ({recorded})"
              + (f"; changed by this command line: {', '.join(changed)}" if changed else "")
              + (f"; kept from the run where {args.config} differs: {', '.join(kept[:6])}"
                 + (f" and {len(kept) - 6} more" if len(kept) > 6 else "") if kept else ""),
              file=sys.stderr, flush=True)
    return resumed


def _flat(config: RunConfig, prefix: str = "") -> dict:
    """``section.key`` -> value of every setting of a config."""
    out = {}
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(_flat(value, key + "."))
        else:
            out[key] = value
    return out


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


def launcher_note(exit_code: int, environ: dict = os.environ) -> str:
    """Under torch's elastic launcher (``accelerate launch --multi_gpu``, ``torchrun``), which reports every rank
    that exits non-zero as a ``ChildFailedError`` block: what that block means after a stop."""
    if "TORCHELASTIC_RUN_ID" not in environ:
        return ""
    return (f" (the launcher's ChildFailedError report below is this stop: exitcode {exit_code} means the checkpoint "
            "was saved, nothing failed)")


def main_rank() -> bool:
    """Whether this process is the launch's main rank (one process alone is)."""
    return int(os.environ.get("RANK", 0)) == 0


def run_trainer(parser: argparse.ArgumentParser, args: argparse.Namespace, config: RunConfig, section: str) -> Path:
    """Train ``config`` with the task of the trainer of ``section``; every expected failure exits with one line on each
    rank (config 2, data or checkpoint 1, a full disk 1); a stop signal exits 128 + its number after the checkpoint,
    printed by the main rank only."""
    from ca2vdm.io.write_errors import describe_write_error, is_disk_full  # after the arguments: torch loads here
    from ca2vdm.training.loop import train
    from ca2vdm.training.run_guard import Preempted

    warning = launch_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        return train(config, resume=args.resume, progress_bar=not args.no_progress,
                     task_type=TRAINERS[section].task_type())
    except ConfigError as e:
        parser.exit(2, f"error: {e.for_cli()}\n")
    except Preempted as e:
        if main_rank():
            print(e.for_cli() + launcher_note(e.exit_code), file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except Ca2vdmError as e:  # data, checkpoints, a non-finite loss, a locked run
        parser.exit(1, f"error: {e.for_cli()}\n")
    except OSError as e:  # e.g. the metrics log or config.yaml on a full disk
        if not is_disk_full(e, config.train.output_dir):
            raise
        problem, fix = describe_write_error(e, config.train.output_dir, "another train.output_dir")
        parser.exit(1, f"error: {problem} while training; checkpoints already saved are intact. {fix}, then rerun "
                       "with --resume latest\n")


def trainer_command(doc: str, config_help: str, section: str, argv: list[str] | None = None,
                    prog: str | None = None) -> tuple[RunConfig, Path]:
    """A trainer's whole command line (``argv``, default: this process's): parse it (``key=value`` overrides
    anywhere), load and check the config of ``section``, run it; returns the config and the run folder (every expected
    failure has exited with one line)."""
    parser = trainer_parser(doc, config_help, prog)
    args = parser.parse_intermixed_args(argv)
    config = load_trainer_config(parser, args, section)
    return config, run_trainer(parser, args, config, section)
