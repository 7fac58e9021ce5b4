"""Sampling precision: the dtype of the model's weights and of its KV cache.

What stays float32 at every precision: the rotary tables (``CausalVideoDiT._apply`` rebuilds them in float32 after a
cast) and the rotation itself (:func:`ca2vdm.attention.apply_rope`), the softmax statistics (the fused SDPA, flash
and FlexAttention kernels keep them in float32; :func:`ca2vdm.attention.matmul_attention` computes its scores in
float32), the timestep embedding's frequencies, and the sampler's state and noise (``ca2vdm.pipeline.STATE_DTYPE``).
"""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_dtype_name(device: torch.device | str) -> str:
    """bf16 on CUDA (tensor cores, float32's range), fp32 on the CPU."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def resolve_dtype(name: str | None, device: torch.device | str) -> torch.dtype:
    """The torch dtype of ``name`` (fp32 | bf16 | fp16; None: :func:`default_dtype_name` for ``device``)."""
    name = default_dtype_name(device) if name is None else name
    if name not in DTYPES:
        raise ValueError(f"--dtype {name}: not supported; use {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """fp32 | bf16 | fp16 for a torch dtype of :data:`DTYPES` (as the CLI and its stats spell it)."""
    return next(name for name, value in DTYPES.items() if value == dtype)
