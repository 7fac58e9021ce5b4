"""Training-free step caching inside each chunk: policies that skip or forecast denoising passes.

A policy (:class:`StepCache`) is configured by its settings dataclass (:mod:`ca2vdm.config.step_caches`, where the
names and settings are declared for the front ends) and hooks the model's block stack while the pipeline samples a
chunk; the conditioning KV cache is untouched: commit passes always run in full. ``build_step_cache(name, options,
calibration)`` makes one by name; ``policy.attached(model)`` attaches one by hand for a ``with`` block.
"""
from ca2vdm.config import STEP_CACHE_NAMES as POLICIES
from ca2vdm.sampling.step_cache.adacache import AdaCache
from ca2vdm.sampling.step_cache.base import StepCache, StepCacheHook
from ca2vdm.sampling.step_cache.chunkcache import ChunkCache
from ca2vdm.sampling.step_cache.fastercache import FasterCache
from ca2vdm.sampling.step_cache.magcache import MagCache, MagCacheRecorder
from ca2vdm.sampling.step_cache.registry import REGISTRY, build_step_cache
from ca2vdm.sampling.step_cache.taylorseer import TaylorSeer
from ca2vdm.sampling.step_cache.teacache import TeaCache, TeaCacheRecorder, fit_polynomial

__all__ = ["StepCache", "StepCacheHook", "TeaCache", "TeaCacheRecorder", "FasterCache", "AdaCache", "MagCache",
           "MagCacheRecorder", "TaylorSeer", "ChunkCache", "fit_polynomial", "build_step_cache", "POLICIES",
           "REGISTRY"]
