"""The training state of an FSDP-sharded model (``train.fsdp``), saved as full tensors that one process can read.

accelerate knows nothing of the sharding (it would wrap the model in DDP, and save rank 0's shards as if they were
the whole optimizer), so a sharded model and its optimizer stay out of ``accelerator.prepare``: the optimizer gets
accelerate's wrapper for gradient accumulation only, and :class:`ShardedState` writes and reads them. The scheduler,
RNG states, EMA (:mod:`ca2vdm.training.ema`) and step still go through accelerate's ``save_state`` / ``load_state``.

A checkpoint of a sharded run has the files of an unsharded one: ``model.safetensors`` (the full raw weights) and
``optimizer.bin`` (the full optimizer state, keyed by parameter name); both are gathered on rank 0 at save and cut
back into each process's shards at resume, so a run resumes exactly.
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


class ShardedState:
    """Saves and restores a sharded model and its optimizer as full state dicts (every rank calls both methods)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, trained_only: bool = False):
        self.model, self.optimizer, self.trained_only = model, optimizer, trained_only

    def save(self, directory: Path, main: bool) -> None:
        """Gather the full weights and optimizer state; the main rank writes them into ``directory``."""
        weights = get_model_state_dict(self.model, options=_GATHER)
        if self.trained_only:  # a LoRA run: its adapter (the frozen base is rebuilt from train.init_from)
            trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
            weights = {k: v for k, v in weights.items() if k in trained}
        optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=_GATHER)
        if main:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(directory / ckpt.TRAINING_WEIGHTS_NAME),
                      metadata={"format": "pt"})
            torch.save(optimizer, directory / OPTIMIZER_NAME)

    def load(self, directory: Path) -> None:
        """Read the full files of ``directory`` and keep this process's shards."""
        options = StateDictOptions(full_state_dict=True, strict=not self.trained_only)
        set_model_state_dict(self.model, load_file(str(directory / ckpt.TRAINING_WEIGHTS_NAME)), options=options)
        optimizer = torch.load(directory / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
        set_optimizer_state_dict(self.model, self.optimizer, optimizer, options=options)


def prepare(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            trained_only: bool = False):
    """``accelerator.prepare`` for a replicated model; for a sharded one, what accelerate may wrap of it. Returns
    (model, optimizer, scheduler, :class:`ShardedState` or None); ``trained_only``: its files keep the parameters that
    train (a LoRA run's adapter)."""
    if not is_sharded(model):
        return (*accelerator.prepare(model, optimizer, scheduler), None)
    state = ShardedState(model, optimizer, trained_only)
    return model, AcceleratedOptimizer(optimizer, device_placement=False), accelerator.prepare(scheduler), state
