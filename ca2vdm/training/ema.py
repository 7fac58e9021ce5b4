"""Exponential moving average of a model's weights, kept where the weights are: on every process in full for a
replicated (DDP) model, and as each process's own shards for an FSDP-sharded one (:mod:`ca2vdm.training.parallelize`).

A sharded model's state dict holds DTensors, so the shadow copies them shard for shard and every update is local
(no communication). Saving gathers: :meth:`EMA.state_dict` and :meth:`EMA.gathered` return full tensors (a
collective: every rank calls them), and :meth:`EMA.load_state_dict` takes full tensors and keeps this process's shards.
Training checkpoints, and the published ``ema.safetensors``, therefore hold full weights whatever the world size.
"""
from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


class EMA:
    """Exponential moving average of a model's parameters (saved and restored through accelerate).

    The decay warms up as min(decay, (1 + step) / (10 + step)) so that short runs are not dominated by the
    (zero-initialised) starting weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float, trained_only: bool = False):
        self.decay = decay
        trained = {n for n, p in model.named_parameters() if p.requires_grad} if trained_only else None
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()
                       if trained is None or k in trained}  # trained_only: a LoRA run's adapter, not its frozen base

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.float(), 1 - decay)

    def with_shadow(self, shadow: dict[str, torch.Tensor]) -> "EMA":
        """An EMA of the same decay holding ``shadow`` (e.g. what a task publishes of this one)."""
        other = EMA.__new__(EMA)
        other.decay, other.shadow = self.decay, shadow
        return other

    def gathered(self) -> "EMA":
        """This EMA with full tensors (itself when nothing is sharded); every rank must call it."""
        if not any(isinstance(v, DTensor) for v in self.shadow.values()):
            return self
        return self.with_shadow(_full(self.shadow))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.gathered().shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = {k: _like(v, self.shadow.get(k)) for k, v in state["shadow"].items()}


def _full(shadow: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.full_tensor().cpu() if isinstance(v, DTensor) else v for k, v in shadow.items()}


def _like(full: torch.Tensor, current: torch.Tensor | None) -> torch.Tensor:
    """A copy of ``full`` laid out like ``current``: sharded the same way if that is a DTensor."""
    if isinstance(current, DTensor):
        return distribute_tensor(full.to(current.device), current.device_mesh, current.placements)
    return full.clone()
