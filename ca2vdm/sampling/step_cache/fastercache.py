"""FasterCache (Lv et al., arXiv 2410.19355): CFG-Cache plus attention-output reuse.

CFG-Cache: on full-guidance steps both branches run and the difference ``uncond - cond`` is stored split into a
low-frequency band (a centred disc of radius min(H, W) // 5 in each frame's 2-D spectrum) and the high-frequency
rest. On the steps between, only the conditional branch runs and the unconditional velocity is rebuilt as
``cond + w_low * low_bias + w_high * high_bias``, where the low band is weighted up early in sampling and the high
band late (``w = 1 + boost * (1 - progress)`` and ``1 + boost * progress``).

Attention reuse: in the later part of sampling (``progress >= reuse_from``) every other step reuses each
attention module's output, extrapolated linearly in step index from its last two computed outputs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ca2vdm.config.step_caches import FasterCacheConfig
from ca2vdm.models.hooks import ModelHook
from ca2vdm.sampling.flow import guidance
from ca2vdm.sampling.step_cache.base import STEP_CACHE_HOOK, StepCache
from ca2vdm.sampling.step_cache.registry import register


def low_frequency_mask(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H, W) bool disc of radius min(H, W) // 5 around the centre of an fftshift-ed spectrum."""
    ys = torch.arange(height, device=device) - height // 2
    xs = torch.arange(width, device=device) - width // 2
    return ys[:, None] ** 2 + xs[None, :] ** 2 <= (min(height, width) // 5) ** 2


def split_bands(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectra of the low and high bands of x (..., H, W), each (..., H, W) complex, fftshift-ed."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))
    mask = low_frequency_mask(x.shape[-2], x.shape[-1], x.device)
    return spectrum * mask, spectrum * ~mask


def from_spectrum(spectrum: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real


@dataclass
class AttentionHistory:
    """One branch's last two computed outputs of each attention module, by (layer, kind): [(step, output)]."""
    outputs: dict[tuple[int, str], list[tuple[int, torch.Tensor]]] = field(default_factory=dict)


class AttentionReuse(ModelHook):
    """On an attention module: in the later part of sampling, every other step extrapolates the module's output
    from its last two computed outputs instead of computing it (commit passes always compute)."""

    def __init__(self, policy: FasterCache, key: tuple[int, str]):
        self.policy, self.key = policy, key

    def forward(self, call: Callable[..., torch.Tensor], *args) -> torch.Tensor:
        policy = self.policy
        if policy.committing:
            return call(*args)
        history = policy.branch_state.outputs.setdefault(self.key, [])  # the last two computed
        if policy.reuse_attention_step() and len(history) == 2:
            (step_a, out_a), (step_b, out_b) = history
            policy.attention_reused += 1
            return out_b + (policy.index - step_b) / (step_b - step_a) * (out_b - out_a)
        out = call(*args)
        history[:] = history[-1:] + [(policy.index, out)]
        return out


@register
class FasterCache(StepCache):
    """CFG-Cache and attention-output reuse; ``cfg_every=1`` and ``reuse_from=1`` turn both off."""

    config_type, State = FasterCacheConfig, AttentionHistory

    def __init__(self, config: FasterCacheConfig | None = None, **options):
        super().__init__(config, **options)
        self.attention_reused = 0

    def _clear_chunk(self) -> None:
        super()._clear_chunk()
        self.bias: tuple[torch.Tensor, torch.Tensor] | None = None  # spectra of v_uncond - v_cond: (low, high)

    # -- CFG-Cache --------------------------------------------------------------------------------------------
    def full_guidance_step(self) -> bool:
        c = self.config
        return self.index < c.cfg_warmup or self.boundary_step or (self.index - c.cfg_warmup) % c.cfg_every == 0

    def guide(self, both, cond, scale: float) -> torch.Tensor:
        if self.full_guidance_step() or self.bias is None:
            v_cond, v_uncond = both()
            self.bias = split_bands(v_uncond - v_cond)
            return guidance(v_cond, v_uncond, scale)
        v_cond = cond()
        self.skipped += 1  # the unconditional stack evaluation that did not run
        progress = self.index / max(1, self.num_steps - 1)
        w_low, w_high = 1 + self.config.low_boost * (1 - progress), 1 + self.config.high_boost * progress
        v_uncond = v_cond + from_spectrum(w_low * self.bias[0] + w_high * self.bias[1]).to(v_cond.dtype)
        return guidance(v_cond, v_uncond, scale)

    # -- attention reuse --------------------------------------------------------------------------------------
    def attach(self, model) -> None:
        super().attach(model)
        for key, hooks in model.attention_hooks():
            hooks.attach(STEP_CACHE_HOOK, AttentionReuse(self, key))

    def detach(self) -> None:
        for _, hooks in self.model.attention_hooks():
            hooks.detach(STEP_CACHE_HOOK)
        super().detach()

    def reuse_attention_step(self) -> bool:
        reuse_from = self.config.reuse_from
        late = self.index >= reuse_from * self.num_steps and reuse_from < 1
        return late and not self.boundary_step and (self.index - int(reuse_from * self.num_steps)) % 2 == 1
