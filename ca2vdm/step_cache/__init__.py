"""Training-free step caching inside each chunk: policies that skip or approximate denoising passes.

Attach one with ``model.enable_cache(policy)`` (the pipeline does it for ``step_cache=``); remove it with
``model.disable_cache()``. The conditioning KV cache is untouched: commit passes always run in full. Policies
register themselves by name (:mod:`.registry`); ``POLICIES`` lists the choices of ``--step-cache``.
"""
from __future__ import annotations

from .adacache import AdaCache
from .base import StepCache
from .chunkcache import ChunkCache
from .fastercache import FasterCache
from .magcache import MagCache, MagCacheRecorder
from .registry import REGISTRY, build_step_cache, option_defaults, parse_options, policy_names
from .taylorseer import TaylorSeer
from .teacache import TeaCache, TeaCacheRecorder, fit_polynomial

POLICIES = policy_names()

__all__ = ["StepCache", "TeaCache", "TeaCacheRecorder", "FasterCache", "AdaCache", "MagCache", "MagCacheRecorder",
           "TaylorSeer", "ChunkCache", "fit_polynomial", "build_step_cache", "parse_options", "option_defaults",
           "POLICIES", "REGISTRY"]
