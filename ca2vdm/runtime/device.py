"""Where the library runs: the device, and the precision of the weights.

Precision: ``fp32 | bf16 | fp16`` (:data:`ca2vdm.config.PRECISIONS`, the one vocabulary of sampling and training)
is the dtype of the model's weights and KV cache. What stays float32 at every precision: the rotary tables
(a model rebuilds them in float32 after a cast: the DiT's ``_apply``) and the rotation itself
(:func:`ca2vdm.models.attention.apply_rope`), the softmax statistics (the fused SDPA, flash and FlexAttention kernels
keep them in float32; :func:`ca2vdm.models.attention.matmul_attention` computes its scores in float32), the timestep
embedding's frequencies, and the sampler's state and noise (``ca2vdm.sampling.pipeline.STATE_DTYPE``).
"""
from __future__ import annotations

import torch

from ca2vdm.config import PRECISIONS
from ca2vdm.errors import SettingError

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16)))


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` or None (CUDA when present, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or a torch device; a
    SettingError for anything else and for CUDA where there is none (saying so when this PyTorch is a CPU build)."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise SettingError("device", name, "not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and torch.version.hip is None:
                raise SettingError("device", name, f"this PyTorch ({torch.__version__}) is a CPU build, without "
                                   "CUDA; on a machine with an NVIDIA GPU install its CUDA build with bash "
                                   "scripts/setup.sh --cuda (or use cpu)")
            raise SettingError("device", name, "CUDA is not available on this machine; use cpu (or auto)")
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise SettingError("device", name, f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def default_dtype_name(device: torch.device | str) -> str:
    """bf16 on CUDA (tensor cores, float32's range), fp32 on the CPU."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def resolve_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """The torch dtype of ``name`` (fp32 | bf16 | fp16, or one of their torch dtypes; None: bf16 on CUDA, fp32 on
    the CPU)."""
    if isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    name = default_dtype_name(device) if name is None else name
    if name not in DTYPES:
        raise SettingError("dtype", name, f"not supported; use {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """fp32 | bf16 | fp16 for a torch dtype of :data:`DTYPES`."""
    return next(name for name, value in DTYPES.items() if value == dtype)
