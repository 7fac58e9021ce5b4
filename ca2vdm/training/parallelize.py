"""Scaling techniques applied to a finished video model for training, in a fixed order (as torchtitan's parallelize
modules do): activation checkpointing per block, then FSDP2 ``fully_shard`` per block and once at the root.

The model code knows nothing of either; it declares its repeated blocks
(:meth:`~ca2vdm.models.base.CausalVideoModel.repeated_blocks`) and the training loop calls :func:`parallelize` once,
before the optimizer is built. Both keep every parameter's name, so state dicts and checkpoints are the same as without
them.

- ``train.activation_checkpointing``: each block keeps only its input for the backward pass and recomputes its
  activations there (PyTorch's composable, non-reentrant ``checkpoint``); the values are unchanged.
- ``train.fsdp``: each block's parameters, then the rest (embedders, final layer), are sharded over all processes of
  the launch (``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``; gloo on CPU, nccl on GPU). A
  block's full weights exist only while its forward or backward runs. Checkpoints are gathered to full tensors
  (:mod:`ca2vdm.training.sharded_state`).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from ca2vdm.config import Config
from ca2vdm.errors import ConfigError


def parallelize(model: nn.Module, config: Config, device: torch.device) -> nn.Module:
    """Apply ``config.train``'s activation checkpointing and FSDP to ``model`` (in place; returned for chaining)."""
    tc = config.train
    if not (tc.activation_checkpointing or tc.fsdp):
        return model
    blocks = _blocks(model)
    if tc.activation_checkpointing:
        for block in blocks:
            checkpoint(block)
    if tc.fsdp:
        shard(model, blocks, device)
    return model


def _blocks(model: nn.Module) -> nn.ModuleList:
    if not callable(getattr(model, "repeated_blocks", None)):
        raise ConfigError(f"train.activation_checkpointing and train.fsdp apply to a video model's repeated blocks; "
                          f"{type(model).__name__} declares none: set both to false")
    return model.repeated_blocks()


def shard(model: nn.Module, blocks: nn.ModuleList, device: torch.device) -> None:
    """``fully_shard`` each block, then the root, over a 1-D mesh of every process (dim 0 of each parameter)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        raise ConfigError("train.fsdp=true shards the model over several processes, but this is a single process; "
                          "launch with `accelerate launch --multi_gpu --num_processes N train/train.py ...` (also on "
                          "a CPU) or `torchrun --nproc_per_node N train/train.py ...`, or set train.fsdp=false")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    model.to(device)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    local = sum(p.to_local().numel() for p in blocks.parameters())
    total = sum(p.numel() for p in blocks.parameters())
    print(f"rank {dist.get_rank()}: FSDP holds {local} of {total} block parameters", flush=True)


def is_sharded(model: nn.Module) -> bool:
    """Whether :func:`parallelize` sharded ``model`` with FSDP."""
    return isinstance(model, FSDPModule)
