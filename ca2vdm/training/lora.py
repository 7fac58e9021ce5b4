"""LoRA fine-tuning through the one training loop: a trainer's model trained as an adapter on ``train.init_from``.

With a ``train.lora`` section the loop wraps the trainer's task in :class:`LoraTask`: the task builds its model from
``train.init_from`` as for a full fine-tune, then the base is frozen and LoRA layers are injected
(:func:`ca2vdm.models.lora.for_training`). Only the adapter trains: the optimizer, the EMA, the gradient clipping and
the resume state hold its tensors alone. Each checkpoint folder holds accelerate's resume state (``model.safetensors``
with the adapter's tensors only, their optimizer state, scheduler, RNG, EMA, step) and ``adapter.safetensors``: the
EMA adapter inference applies, with the metadata the task's own weights file records, the adapter's settings and the
base's hash (:mod:`ca2vdm.checkpoints.adapters`).

A resumed run rebuilds the base from ``train.init_from`` (refused if those weights changed since: the hash) and loads
the adapter into it, so a LoRA run resumes exactly as a full one does, stops on SIGTERM the same way, and shards with
FSDP (frozen base and adapter alike; :mod:`ca2vdm.training.sharded_state` gathers the adapter alone). Any task that
builds its model from ``train.init_from`` and publishes ``ema.safetensors`` can be trained this way.
"""
from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from ca2vdm.checkpoints.adapters import ADAPTER_NAME, adapter_metadata, read_adapter, weights_hash
from ca2vdm.checkpoints.weights import TRAINING_WEIGHTS_NAME, WEIGHTS_NAME, read_metadata, save_tensors
from ca2vdm.config import RunConfig
from ca2vdm.errors import CheckpointError, opt
from ca2vdm.models import lora as layers
from ca2vdm.training.ema import EMA
from ca2vdm.training.task import Task


class LoraTask:
    """A :class:`~ca2vdm.training.task.Task` whose model trains as a LoRA adapter on its ``train.init_from``
    weights; data and loss are the wrapped task's."""

    def __init__(self, task: Task):
        self.task = task
        self.model: torch.nn.Module | None = None  # the model with its adapter (peft's names of the adapter's tensors)
        self.base_sha256: str | None = None
        self.resumed_base: str | None = None   # the base hash the resumed checkpoint's adapter records

    def check_resume(self, path: Path, config: RunConfig) -> None:
        """The checkpoint must be a LoRA run's; its adapter file records what the task checks (model, codec)."""
        adapter = Path(path) / ADAPTER_NAME
        if not adapter.is_file():
            raise CheckpointError(f"checkpoint {path} holds no {ADAPTER_NAME}: it was not trained with train.lora; "
                                  f"resume it without train.lora, or start the LoRA run in a new train.output_dir")
        self.task.check_resume(adapter, config)
        self.resumed_base = read_adapter(adapter).base_sha256

    def dataset(self, config: RunConfig):
        return self.task.dataset(config)

    def build_model(self, config: RunConfig, resume: str | None) -> torch.nn.Module:
        """The base from ``train.init_from`` (also when resuming: the resume state holds only the adapter), frozen,
        with a fresh adapter (a resume then loads the trained one)."""
        model = self.task.build_model(config, None)
        self.base_sha256 = weights_hash(model.state_dict())
        if self.resumed_base is not None and self.resumed_base != self.base_sha256:
            raise CheckpointError(f"train.init_from={config.train.init_from} now holds other weights (sha256 "
                                  f"{self.base_sha256[:12]}) than the base this run's adapter was trained on "
                                  f"({self.resumed_base[:12]}); put those weights back to {opt('resume')}")
        self.model = layers.for_training(model, config.train.lora)
        return self.model

    def loss(self, model, batch: dict, config: RunConfig, gen: torch.Generator) -> torch.Tensor:
        return self.task.loss(model, batch, config, gen)

    def save_weights(self, directory: Path, ema: EMA, config: RunConfig, step: int) -> None:
        """``adapter.safetensors``: the EMA adapter (peft's format) with the metadata the task records for its own
        weights, the adapter's settings and the base's hash."""
        self.task.save_weights(directory, ema.with_shadow(layers.adapter_tensors(self.model, ema.shadow)), config,
                               step)
        written = directory / WEIGHTS_NAME  # the task's file, holding the adapter's tensors
        lora = adapter_metadata(layers.recorded_settings(config.train.lora, self.model), self.base_sha256,
                                str(config.train.init_from))
        save_tensors(directory / ADAPTER_NAME, load_file(str(written)), {**read_metadata(written), **lora})
        written.unlink()

    def sample(self, ema: EMA, config: RunConfig, out: Path, step: int) -> None:
        """The task's sample from the base with the EMA adapter folded in."""
        device = next(iter(ema.shadow.values())).device
        merged = layers.merge(self.task.build_model(config, None).to(device),
                              layers.adapter_tensors(self.model, ema.shadow),
                              layers.recorded_settings(config.train.lora, self.model), 1.0)
        self.task.sample(ema.with_shadow(merged.state_dict()), config, out, step)


def keep_adapter_only(accelerator: Accelerator) -> None:
    """Make accelerate's ``save_state`` write only the parameters that train (the adapter) of each prepared model,
    and ``load_state`` load them back (all of them, and nothing else)."""

    def save(models: list, weights: list[dict], _directory: str) -> None:
        for model, state in zip(models, weights):
            trained = layers.trainable_names(model)
            for key in [k for k in state if k not in trained]:
                del state[key]

    def load(models: list, directory: str) -> None:
        for index, model in enumerate(models):
            path = Path(directory) / (TRAINING_WEIGHTS_NAME if index == 0 else f"model_{index}.safetensors")
            state = load_file(str(path))
            missing = sorted(layers.trainable_names(model) - state.keys())
            unexpected = model.load_state_dict(state, strict=False).unexpected_keys
            if missing or unexpected:
                raise CheckpointError(f"{path} does not hold this run's adapter (missing {missing[:3]}, unexpected "
                                      f"{unexpected[:3]})")
        models.clear()  # loaded: accelerate loads the rest of the state

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)
