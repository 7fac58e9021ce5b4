"""The causal Wan's block stack as step-caching policies see it: one :class:`WanStackCall` per pass through the model's
``step_cache_hooks`` (:class:`~ca2vdm.models.base.StackCall`).

The blocks are diffusers' ``WanTransformerBlock`` modules, called as modules (so diffusers' own hooks fire too) with
the per-token timestep projection of their 4-D path: each frame's six modulation vectors repeated over its tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ca2vdm.models.wan.processors import AttentionPass, WanPromptKV


@dataclass
class WanStackCall:
    """One call of the block stack: ``x`` (B, T, S, D) the tokens entering it (a view of the (B, T*S, D) sequence),
    ``modulation`` (B, T, 6, D) each frame's timestep projection, ``prompt`` what cross-attention reads, ``ctx`` the
    pass's attention settings. A recompute pass leads with ``num_cond_frames`` conditioning frames (:meth:`noisy` cuts
    them off); a commit pass (``commit``) writes the cache and must run."""
    blocks: nn.ModuleList
    x: torch.Tensor
    modulation: torch.Tensor
    prompt: WanPromptKV | torch.Tensor
    ctx: AttentionPass
    num_cond_frames: int = 0

    @property
    def commit(self) -> bool:
        return self.ctx.commit

    def noisy(self, tensor: torch.Tensor) -> torch.Tensor:
        """The frames being denoised of a (B, T, ...) tensor of this pass."""
        return tensor[:, self.num_cond_frames:]

    def modulated_input(self) -> torch.Tensor:
        """The first block's normalised, timestep-modulated self-attention input over the frames being denoised,
        (B, T', S, D) (TeaCache's indicator)."""
        block = self.blocks[0]
        shift, scale = (block.scale_shift_table[None] + self.noisy(self.modulation).float())[:, :, :2].unbind(2)
        x = self.noisy(self.x)
        return (block.norm1(x.float()) * (1 + scale[:, :, None]) + shift[:, :, None]).type_as(x)

    def run(self) -> torch.Tensor:
        """The stack's output (B, T, S, D), every block computed."""
        B, T, S, D = self.x.shape
        temb = self.modulation.repeat_interleave(S, dim=1)  # (B, T*S, 6, D): the blocks' per-token path
        x = self.x.flatten(1, 2)  # (B, T*S, D)
        for block in self.blocks:
            x = block(x, self.prompt, temb, self.ctx)
        return x.unflatten(1, (T, S))
