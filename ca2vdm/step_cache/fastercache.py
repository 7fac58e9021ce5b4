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

import torch

from ..diffusion import guidance
from .base import StepCache
from .registry import register


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


@register
class FasterCache(StepCache):
    """CFG-Cache and attention-output reuse; ``cfg_every=1`` and ``reuse_from=1`` turn both off."""

    name, options = "fastercache", ("cfg_every", "cfg_warmup", "low_boost", "high_boost", "reuse_from")

    def __init__(self, cfg_every: int = 3, cfg_warmup: int = 2, low_boost: float = 0.0, high_boost: float = 0.0,
                 reuse_from: float = 0.5):
        super().__init__()
        if cfg_every < 1 or cfg_warmup < 0 or not 0 <= reuse_from <= 1:
            raise ValueError("FasterCache needs cfg_every >= 1, cfg_warmup >= 0 and reuse_from in [0, 1]")
        self.cfg_every, self.cfg_warmup = cfg_every, cfg_warmup
        self.low_boost, self.high_boost, self.reuse_from = low_boost, high_boost, reuse_from
        self.attention_reused = 0
        self._attention_modules: list = []

    # -- CFG-Cache --------------------------------------------------------------------------------------------
    def full_guidance_step(self) -> bool:
        return self.index < self.cfg_warmup or self.boundary_step or (self.index - self.cfg_warmup) % self.cfg_every == 0

    def guide(self, both, cond, scale: float) -> torch.Tensor:
        bias = self.state["cfg"]
        if self.full_guidance_step() or "low" not in bias:
            v_cond, v_uncond = both()
            bias["low"], bias["high"] = split_bands(v_uncond - v_cond)
            return guidance(v_cond, v_uncond, scale)
        v_cond = cond()
        self.skipped += 1  # the unconditional stack evaluation that did not run
        progress = self.index / max(1, self.num_steps - 1)
        w_low, w_high = 1 + self.low_boost * (1 - progress), 1 + self.high_boost * progress
        v_uncond = v_cond + from_spectrum(w_low * bias["low"] + w_high * bias["high"]).to(v_cond.dtype)
        return guidance(v_cond, v_uncond, scale)

    # -- attention reuse --------------------------------------------------------------------------------------
    def attach(self, model) -> None:
        super().attach(model)
        for block in model.stack.blocks:
            for name in ("spatial", "temporal"):
                module = getattr(block, name)
                forward = module.forward
                key = (block.layer, name)
                module.forward = lambda x, ctx, layer, f=forward, k=key: self._attention(f, k, x, ctx, layer)
                self._attention_modules.append(module)

    def detach(self) -> None:
        for module in self._attention_modules:
            del module.forward
        self._attention_modules.clear()
        super().detach()

    def reuse_attention_step(self) -> bool:
        late = self.index >= self.reuse_from * self.num_steps and self.reuse_from < 1
        return late and not self.boundary_step and (self.index - int(self.reuse_from * self.num_steps)) % 2 == 1

    def _attention(self, forward, key, x, ctx, layer) -> torch.Tensor:
        if ctx.commit:
            return forward(x, ctx, layer)
        history = self.branch_state.setdefault(key, [])  # [(step, output)], the last two computed
        if self.reuse_attention_step() and len(history) == 2:
            (step_a, out_a), (step_b, out_b) = history
            self.attention_reused += 1
            return out_b + (self.index - step_b) / (step_b - step_a) * (out_b - out_a)
        out = forward(x, ctx, layer)
        history[:] = history[-1:] + [(self.index, out)]
        return out
