"""The training state of an FSDP-sharded model (``train.fsdp``), saved as full tensors that one process can read.

accelerate knows nothing of the sharding (it would wrap the model in DDP, and save rank 0's shards as if they were
the whole optimizer), so a sharded model and its optimizer stay out of ``accelerator.prepare``: the optimizer gets
accelerate's wrapper for gradient accumulation only, and :class:`ShardedState` writes and reads them. The scheduler,
RNG states, EMA (:mod:`ca2vdm.training.ema`) and step still go through accelerate's ``save_state`` / ``load_state``.

A checkpoint of a sharded run has the files of an unsharded one: ``model.safetensors`` (the full raw weights) and
``optimizer.bin`` (the full optimizer state, keyed by parameter name), and for a task's other trained parts
``model_1.safetensors``, ``optimizer_1.bin``, ...; all are gathered on rank 0 at save and cut back into each
process's shards at resume, so a run resumes exactly.
"""
from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ca2vdm.checkpoints import weights as ckpt
from ca2vdm.training.parallelize import is_sharded

OPTIMIZER_NAME = "optimizer.bin"
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _numbered(name: str, index: int) -> str:
    """The file of the ``index``-th trained module, named as accelerate names them (model.safetensors,
    model_1.safetensors, ...; optimizer.bin, optimizer_1.bin, ...)."""
    stem, dot, suffix = name.partition(".")
    return name if index == 0 else f"{stem}_{index}{dot}{suffix}"


class ShardedState:
    """Saves and restores sharded models and their optimizers as full state dicts (every rank calls both methods);
    the first pair in the files an unsharded run writes, the others numbered as accelerate numbers them.
    ``trained_only``: the files keep the parameters that train (a LoRA run's adapter; its frozen base is rebuilt
    from ``train.init_from``)."""

    def __init__(self, models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer],
                 trained_only: bool = False):
        self.models, self.optimizers, self.trained_only = models, optimizers, trained_only

    def save(self, directory: Path, main: bool) -> None:
        """Gather the full weights and optimizer states; the main rank writes them into ``directory``."""
        for i, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            weights = get_model_state_dict(model, options=_GATHER)
            if self.trained_only:
                trained = {n for n, p in model.named_parameters() if p.requires_grad}
                weights = {k: v for k, v in weights.items() if k in trained}
            state = get_optimizer_state_dict(model, optimizer, options=_GATHER)
            if main:
                save_file({k: v.contiguous() for k, v in weights.items()},
                          str(directory / _numbered(ckpt.TRAINING_WEIGHTS_NAME, i)), metadata={"format": "pt"})
                torch.save(state, directory / _numbered(OPTIMIZER_NAME, i))

    def load(self, directory: Path) -> None:
        """Read the full files of ``directory`` and keep this process's shards."""
        options = StateDictOptions(full_state_dict=True, strict=not self.trained_only)
        for i, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            set_model_state_dict(model, load_file(str(directory / _numbered(ckpt.TRAINING_WEIGHTS_NAME, i))),
                                 options=options)
            state = torch.load(directory / _numbered(OPTIMIZER_NAME, i), map_location="cpu", weights_only=True)
            set_optimizer_state_dict(model, optimizer, state, options=options)


def prepare(accelerator: Accelerator, models: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer],
            schedulers: list, trained_only: bool = False) -> tuple[list, list, list, ShardedState | None]:
    """``accelerator.prepare`` for replicated models (one optimizer and scheduler each); for sharded ones, what
    accelerate may wrap of them. Returns (models, optimizers, schedulers, :class:`ShardedState` or None);
    ``trained_only``: the sharded files keep the parameters that train (a LoRA run's adapter)."""
    n = len(models)
    if not is_sharded(models[0]):
        prepared = accelerator.prepare(*models, *optimizers, *schedulers)
        return list(prepared[:n]), list(prepared[n:2 * n]), list(prepared[2 * n:]), None
    state = ShardedState(models, optimizers, trained_only)
    wrapped = [AcceleratedOptimizer(optimizer, device_placement=False) for optimizer in optimizers]
    prepared = accelerator.prepare(*schedulers)
    return models, wrapped, list(prepared) if n > 1 else [prepared], state
