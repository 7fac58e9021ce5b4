"""Experiment trackers (``train.log_with``) through accelerate's tracking API, beside ``metrics.jsonl``.

``tensorboard`` writes event files under ``<train.output_dir>/logs/train/`` (``tensorboard --logdir runs/NAME/logs``);
``wandb`` runs offline unless ``WANDB_MODE`` says otherwise, into ``<train.output_dir>/logs/wandb/`` (upload later
with ``wandb sync``). Both are optional extras: ``pip install -e ".[tensorboard]"`` or ``".[wandb]"``. Only the main
rank logs, the same values and steps as ``metrics.jsonl``; the run's config is stored as hyperparameters.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

from accelerate import Accelerator

from ca2vdm.config import Config
from ca2vdm.errors import ConfigError

PROJECT = "train"  # tensorboard: the event files' folder under logs/


def accelerator_kwargs(config: Config) -> dict:
    """``Accelerator`` arguments for ``train.log_with`` (nothing for ``none``); a clear error if its package is
    missing, before any work starts."""
    name = config.train.log_with
    if name == "none":
        return {}
    if importlib.util.find_spec(name) is None:
        raise ConfigError(f"train.log_with={name} needs the {name} package, which is not installed: "
                          f"pip install -e \".[{name}]\", or set train.log_with=none")
    return {"log_with": name, "project_dir": str(Path(config.train.output_dir) / "logs")}


def start(accelerator: Accelerator, config: Config) -> None:
    """Open the run of every tracker (main rank only; a no-op for ``none``), with the config as hyperparameters."""
    if config.train.log_with == "none":
        return
    logs = Path(config.train.output_dir) / "logs"
    init = {"wandb": {"mode": os.environ.get("WANDB_MODE", "offline"), "dir": str(logs)}}
    accelerator.init_trackers(PROJECT, config=hyperparameters(config), init_kwargs=init)


def hyperparameters(config: Config) -> dict:
    """The config as flat ``section.key`` scalars (what TensorBoard's hparams accept: no None, no lists)."""
    flat = {}
    for section, values in dataclasses.asdict(config).items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
