"""What a trainer trains: the one interface between the training loop and a model (a :class:`Task`).

The loop (:mod:`ca2vdm.training.loop`) owns everything every trainer shares: the process group, the data order, the
optimizer and schedule, mixed precision, FSDP and activation checkpointing, the EMA, atomic checkpoints and exact
resume, trackers and preemption. A task supplies what is particular to one model: its data, its model, its loss,
the weights it publishes in each checkpoint and its periodic samples. ``DiffusionTask`` (the video DiT) and
``AutoencoderTask`` (our autoencoder) implement it.

A task may also use modules beside its published model (``DistillTask``: a critic it trains and a frozen teacher):
it then defines ``parts`` (each a :class:`Part`: trained with its own optimizer and schedule, or frozen) and
``losses`` (this step's loss of each module to step, by name; the published model is ``"model"``). The loop treats
every trained part as it treats the model (FSDP, accelerate's wrapper, clipping, checkpoints, exact resume); the EMA
and the published weights are the model's. :func:`parts_of` and :func:`step_losses` give every task that shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import Dataset

from ca2vdm.config import RunConfig
from ca2vdm.training.ema import EMA


class Task(Protocol):
    """Built once per run as ``task_type(config, device)``."""

    def check_resume(self, path: Path, config: RunConfig) -> None:
        """Raise CheckpointError if the checkpoint at ``path`` cannot continue under ``config`` (another model, codec
        or kind), before any work."""

    def dataset(self, config: RunConfig) -> Dataset:
        """The training data; it lists the files it ``skipped`` and its ``videos``, and has ``set_epoch``."""

    def build_model(self, config: RunConfig, resume: str | None) -> torch.nn.Module:
        """A fresh model (initialised from ``train.init_from`` unless resuming)."""

    def loss(self, model: torch.nn.Module, batch: dict, config: RunConfig, gen: torch.Generator) -> torch.Tensor:
        """The loss of one batch; every random draw comes from ``gen`` (seeded by step and rank: exact resume)."""

    def save_weights(self, directory: Path, ema: EMA, config: RunConfig, step: int) -> None:
        """Publish the EMA weights (what inference loads) into the checkpoint ``directory`` as ``ema.safetensors``
        (a LoRA run renames it ``adapter.safetensors``, its metadata kept: :mod:`ca2vdm.training.lora`)."""

    def sample(self, ema: EMA, config: RunConfig, out: Path, step: int) -> None:
        """Write a periodic sample (``train.sample_every``) under ``out``."""


@dataclass(frozen=True)
class Part:
    """A module of a task: trained with its own AdamW at ``lr`` (saved in every checkpoint, resumed exactly), or
    frozen (``lr`` None: no optimizer, no gradients, rebuilt by the task on resume)."""
    module: torch.nn.Module
    lr: float | None = None


def parts_of(task: Task, config: RunConfig, resume: str | None) -> dict[str, Part]:
    """The modules a task uses: ``"model"`` (the published one, trained at ``train.lr``) first, then its ``parts``."""
    parts = {"model": Part(task.build_model(config, resume), config.train.lr)}
    if hasattr(task, "parts"):
        parts.update(task.parts(config, resume))
    return parts


def step_losses(task: Task, models: dict[str, torch.nn.Module], batch: dict, config: RunConfig,
                gen: torch.Generator, step: int) -> dict[str, torch.Tensor]:
    """The losses of this step by the name of the part each one trains (only those whose optimizer steps now):
    a task with parts says so in ``losses``; any other task trains its model with ``loss``."""
    if hasattr(task, "losses"):
        return task.losses(models, batch, config, gen, step)
    return {"model": task.loss(models["model"], batch, config, gen)}
