"""Training-free step caching inside each chunk: policies that skip or approximate denoising passes.

Attach one with ``model.enable_cache(policy)`` (the pipeline does it for ``step_cache=``); remove it with
``model.disable_cache()``. The conditioning KV cache is untouched: commit passes always run in full.
"""
from __future__ import annotations

from .adacache import AdaCache
from .base import StepCache
from .fastercache import FasterCache
from .teacache import TeaCache, TeaCacheRecorder, fit_polynomial

POLICIES = ("none", "teacache", "fastercache", "adacache")


def build_step_cache(name: str, teacache_thresh: float = 0.1,
                     teacache_coefficients: tuple[float, ...] | None = None) -> StepCache | None:
    """A policy by name (``none`` gives None)."""
    if name == "none":
        return None
    if name == "teacache":
        return TeaCache(teacache_thresh, **({"coefficients": teacache_coefficients} if teacache_coefficients else {}))
    if name == "fastercache":
        return FasterCache()
    if name == "adacache":
        return AdaCache()
    raise ValueError(f"unknown step cache {name!r}; choose one of {POLICIES}")


__all__ = ["StepCache", "TeaCache", "TeaCacheRecorder", "FasterCache", "AdaCache", "fit_polynomial",
           "build_step_cache", "POLICIES"]
