"""The step caches' settings: one small frozen dataclass per policy, its fields declared (type, range, help).

The policies themselves live in :mod:`ca2vdm.sampling.step_cache`; these declarations are torch-free so that a
command line offers the names and settings before torch loads, and so that the command line, the Python API and the
server check a policy's settings in one place (:func:`step_cache_config`): unknown, duplicate, non-finite and
out-of-range values are refused with one line naming the setting and what it accepts.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from ca2vdm.config.options import check_fields, declared_fields, setting
from ca2vdm.errors import SettingError, opt

MAX_STEPS = 10_000  # the most denoising steps per chunk (SamplerSettings.steps); step counts of a policy stay below


@dataclass(frozen=True)
class StepCacheConfig:
    """Settings of a step-caching policy (a subclass per policy, registered by ``name`` in :data:`STEP_CACHES`)."""
    name: ClassVar[str] = "none"

    def __post_init__(self) -> None:
        check_fields(self)

    def options(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return asdict(self)

    @classmethod
    def describe(cls) -> list[dict]:
        """Each setting's name, type, default, range and help (what the live demo's page offers)."""
        defaults = asdict(cls())
        return [{"name": name, "type": d.kind.__name__, "default": defaults[name], "min": d.low, "max": d.high,
                 "accepts": d.describe(), "help": d.help} for name, d in declared_fields(cls).items()]


@dataclass(frozen=True)
class TeaCacheConfig(StepCacheConfig):
    """TeaCache (arXiv 2411.19108): skip while the accumulated, rescaled change of the modulated input is small."""
    name: ClassVar[str] = "teacache"
    threshold: float = setting(0.1, "skip while the accumulated rescaled input change stays below this (0: never)",
                               low=0)


@dataclass(frozen=True)
class MagCacheConfig(StepCacheConfig):
    """MagCache (arXiv 2506.09045): skip while the calibrated residual magnitude ratios stay flat."""
    name: ClassVar[str] = "magcache"
    threshold: float = setting(0.06, "skip while the accumulated error |1 - ratio| stays below this (0: never)",
                               low=0)
    max_skip: int = setting(3, "most steps skipped in a row", low=0, high=MAX_STEPS)
    retention: float = setting(0.2, "share of the first steps that always compute", low=0, high=1)


@dataclass(frozen=True)
class TaylorSeerConfig(StepCacheConfig):
    """TaylorSeer (arXiv 2503.06923): compute every interval-th step, forecast the others by a Taylor expansion."""
    name: ClassVar[str] = "taylorseer"
    interval: int = setting(4, "compute the block stack every interval-th step (1: every step)", low=1,
                           high=MAX_STEPS)
    order: int = setting(1, "order of the Taylor forecast", low=0, high=8)
    warmup: int = setting(2, "first steps that always compute", low=1, high=MAX_STEPS)
    growth: int = setting(0, "lengthen the interval by this many steps after each computed step", low=0,
                         high=MAX_STEPS)
    cfg_reuse: bool = setting(False, "every other computed step runs the conditional branch only")


@dataclass(frozen=True)
class ChunkCacheConfig(StepCacheConfig):
    """ChunkCache (ours): a schedule calibrated from the video's own earlier chunks."""
    name: ClassVar[str] = "chunkcache"
    threshold: float = setting(1.0, "budget of recorded forecast error per chunk (0: every step)", low=0)
    warmup: int = setting(2, "first steps that always compute", low=1, high=MAX_STEPS)
    calibrate: int = setting(1, "chunks that compute every step to calibrate", low=1, high=MAX_STEPS)
    momentum: float = setting(0.5, "weight of a new measurement in the record", low=0, high=1)
    cfg_reuse: bool = setting(True, "every other computed step runs the conditional branch only")


@dataclass(frozen=True)
class FasterCacheConfig(StepCacheConfig):
    """FasterCache (arXiv 2410.19355): CFG-Cache and attention-output reuse."""
    name: ClassVar[str] = "fastercache"
    cfg_every: int = setting(3, "run both guidance branches every cfg_every-th step (1: always)", low=1,
                            high=MAX_STEPS)
    cfg_warmup: int = setting(2, "first steps that run both guidance branches", low=0,
                             high=MAX_STEPS)
    low_boost: float = setting(0.0, "weight up the low-frequency bias early in sampling", low=0)
    high_boost: float = setting(0.0, "weight up the high-frequency bias late in sampling", low=0)
    reuse_from: float = setting(0.5, "share of sampling after which attention outputs are reused (1: never)",
                                low=0, high=1)


@dataclass(frozen=True)
class AdaCacheConfig(StepCacheConfig):
    """AdaCache (arXiv 2411.02397): a per-video reuse schedule from the residual's rate of change and motion."""
    name: ClassVar[str] = "adacache"
    motion_weight: float = setting(1.0, "how much motion shortens the reuse", low=0)
    growth_weight: float = setting(1.0, "how much growing motion shortens the reuse", low=0)


STEP_CACHES: dict[str, type[StepCacheConfig]] = {c.name: c for c in (
    TeaCacheConfig, MagCacheConfig, TaylorSeerConfig, ChunkCacheConfig, FasterCacheConfig, AdaCacheConfig)}
STEP_CACHE_NAMES = ("none", *STEP_CACHES)


def step_cache_config(name: str, options: Mapping[str, Any] | None = None) -> StepCacheConfig | None:
    """The checked settings of policy ``name`` (None for ``none``); SettingError naming what is wrong."""
    options = dict(options or {})
    if name not in STEP_CACHE_NAMES:
        raise SettingError("step_cache", name, f"unknown; choose one of {', '.join(STEP_CACHE_NAMES)}")
    if name == "none":
        if options:
            raise SettingError("step_cache_options", ",".join(options),
                               f"needs a step cache ({opt('step_cache')} is none)")
        return None
    config = STEP_CACHES[name]
    allowed = declared_fields(config)
    for key in options:
        if key not in allowed:
            raise SettingError("step_cache_options", key, f"step cache {name} has no such setting; its settings: "
                               f"{', '.join(allowed) or '(none)'}")
    try:
        return config(**options)
    except SettingError as e:  # a setting inside the options: name the options and the policy
        raise SettingError("step_cache_options", f"{e.name}={e.value}", f"{name}'s {e.name} {e.problem}") from None


def parse_step_cache_options(name: str, pairs: list[str]) -> dict[str, Any]:
    """``["threshold=0.2", "max_skip=2"]`` (or ``["threshold=0.2,max_skip=2"]``) as the checked, typed settings of
    policy ``name`` (those given); a setting given twice is refused."""
    options: dict[str, str] = {}
    for pair in (item.strip() for group in pairs for item in group.split(",") if item.strip()):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingError("step_cache_options", pair, "expected KEY=VALUE")
        if key in options:
            raise SettingError("step_cache_options", pair, f"{key} is given twice; give each setting once")
        options[key] = value
    config = step_cache_config(name, options)
    return {} if config is None else {k: v for k, v in config.options().items() if k in options}
