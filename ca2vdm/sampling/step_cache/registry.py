"""Step-cache policies by name, and how a policy is built for a checkpoint.

Each policy module registers its class with :func:`register`, under its settings' name
(:data:`ca2vdm.config.STEP_CACHES`, where the names and settings are declared torch-free for the front ends);
importing :mod:`ca2vdm.sampling.step_cache` imports every policy.
"""
from __future__ import annotations

from collections.abc import Mapping

from ca2vdm.config import STEP_CACHES, StepCacheConfig, step_cache_config
from ca2vdm.sampling.step_cache.base import StepCache

REGISTRY: dict[str, type[StepCache]] = {}


def register(cls: type[StepCache]) -> type[StepCache]:
    """Class decorator: offer ``cls`` under the name of its settings (``cls.config_type.name``)."""
    if cls.config_type is None or cls.config_type.name not in STEP_CACHES:
        raise TypeError(f"{cls.__name__} must declare a config_type registered in ca2vdm.config.STEP_CACHES")
    cls.name = cls.config_type.name
    REGISTRY[cls.name] = cls
    return cls


def build_step_cache(name: str, options: Mapping | StepCacheConfig | None = None,
                     calibration: Mapping[str, list[float]] | None = None,
                     source: str = "the checkpoint") -> StepCache | None:
    """The policy ``name`` (``none`` gives None) with its settings (a mapping, checked, or a config) for a checkpoint
    with these step-cache calibrations (``source`` names it in messages)."""
    config = options if isinstance(options, StepCacheConfig) else step_cache_config(name, options)
    if config is None:
        return None
    return REGISTRY[name].from_calibration(calibration or {}, source, config)
