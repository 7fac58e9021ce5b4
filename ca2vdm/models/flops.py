"""Analytic FLOPs of the model's passes and model FLOP utilisation (MFU) against a device's peak.

FLOPs count multiply-adds twice (the usual convention for MFU); normalisations, activations and the softmax are
left out. MFU = analytic FLOPs / seconds / the device's dense peak for the dtype: the share of the peak the model's
own arithmetic uses (PaLM, arXiv 2204.02311, appendix B), not hardware counters.
"""
from __future__ import annotations

import torch

from ca2vdm.config import ModelConfig

# Dense (no sparsity) tensor-core peaks in TFLOP/s for bf16 and fp16, from the vendors' data sheets; matched against
# torch.cuda.get_device_name() in order (the first name contained in it wins). fp32 has no entry: give the peak.
PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,        # H200 SXM
    "H100 PCIe": 756.0,
    "H100": 989.0,        # H100 SXM
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
}


def forward_flops(cfg: ModelConfig, query_frames: int, key_frames: int, rows: int = 1) -> float:
    """FLOPs of one forward pass over ``query_frames`` frames whose temporal attention reads ``key_frames`` frames
    (the masked recompute passes compute the full square, so there key = query), for ``rows`` videos."""
    S, D = (cfg.resolution // cfg.patch_size) ** 2, cfg.hidden_size
    linear = 2 * S * D * D * (8 + 2 * cfg.mlp_ratio) + 2 * 9 * D * D  # qkv+proj twice, MLP, adaLN; per frame
    attention = 4 * S * S * D                                          # spatial, per frame
    io = 2 * S * D * cfg.patch_size ** 2 * cfg.in_channels * 2         # patch embedding and final layer
    temporal = 4 * S * query_frames * key_frames * D
    if cfg.text_encoder != "none":  # cross-attention: q and output projections, scores over the prompt's tokens
        linear += 2 * S * D * D * 2
        attention += 4 * S * (cfg.text_tokens + 1) * D
    return rows * (cfg.depth * (query_frames * (linear + attention) + temporal) + query_frames * io)


def chunk_flops(cfg: ModelConfig, mode: str, frames_before: int, length: int, steps: int, rows: int,
                evaluated: float = 1.0) -> float:
    """FLOPs of generating one chunk of ``length`` frames after ``frames_before`` frames for ``rows`` rows
    (videos x guidance branches) in cache mode ``mode`` (kv | none | full); a step cache computed the share
    ``evaluated`` of the denoising passes (the commit pass always runs)."""
    if mode == "kv":
        visible = min(cfg.max_context_frames, frames_before) + length
        per_step, commit = forward_flops(cfg, length, visible), forward_flops(cfg, length, visible)
        return rows * (steps * evaluated * per_step + commit)
    context = frames_before if mode == "full" else min(cfg.max_context_frames, frames_before)
    return rows * steps * evaluated * forward_flops(cfg, context + length, context + length)


def train_step_flops(cfg: ModelConfig, batch: int, frames: int, recompute: bool = False) -> float:
    """FLOPs of one training step on ``batch`` clips of ``frames`` frames: forward + backward (twice the forward);
    activation checkpointing (``recompute``) runs the forward once more. MFU conventionally counts 3 forwards only
    (the recomputation is overhead), which :func:`mfu` callers get with ``recompute=False``."""
    return (4 if recompute else 3) * forward_flops(cfg, frames, frames, rows=batch)


def peak_tflops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> tuple[float | None, str]:
    """The device's dense peak TFLOP/s for ``dtype`` and where it came from: ``override`` (given by the caller), the
    table for a known GPU at bf16/fp16, or (None, why not)."""
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, "no peak known for the CPU; give one"
    name = torch.cuda.get_device_name(device)
    if dtype not in (torch.bfloat16, torch.float16):
        return None, f"no table entry for {name} at {dtype}; give the peak"
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value, f"table: {key} dense bf16/fp16"
    return None, f"{name} is not in the table; give its peak"


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: ``flops`` in ``seconds`` over ``peak`` TFLOP/s (None without a peak)."""
    return None if peak is None or seconds <= 0 else flops / seconds / (peak * 1e12)
