"""Step-cache policies by name: the choices of ``--step-cache`` and how a policy is built for a checkpoint.

Each policy module registers its class with :func:`register`; the CLI's choices are ``POLICIES`` (importing
``ca2vdm.step_cache`` imports every policy). A policy's settings are the numeric constructor arguments it lists in
``options``, given on the command line as ``--step-cache-opt KEY=VALUE``.
"""
from __future__ import annotations

import inspect

from .base import StepCache

REGISTRY: dict[str, type[StepCache]] = {}


def register(cls: type[StepCache]) -> type[StepCache]:
    """Class decorator: offer ``cls`` as ``--step-cache cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


def policy_names() -> tuple[str, ...]:
    """``none`` followed by every registered policy."""
    return ("none", *REGISTRY)


def option_defaults(name: str) -> dict[str, float | int]:
    """The settable options of a policy with their defaults (their types are the defaults' types)."""
    parameters = inspect.signature(REGISTRY[name].__init__).parameters
    return {key: parameters[key].default for key in REGISTRY[name].options}


def parse_options(name: str, pairs: list[str]) -> dict[str, float | int]:
    """``["threshold=0.2", "max_skip=2"]`` (or ``["threshold=0.2,max_skip=2"]``) -> typed options of policy
    ``name``; ValueError naming the fix."""
    if name == "none":
        if pairs:
            raise ValueError("--step-cache-opt needs a --step-cache policy (it is none)")
        return {}
    defaults, options = option_defaults(name), {}
    for pair in (item for group in pairs for item in group.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"--step-cache-opt {pair!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(defaults) or '(none)'} for --step-cache {name}")
        kind = type(defaults[key])
        try:
            options[key] = kind(value)
        except ValueError:
            raise ValueError(f"--step-cache-opt {pair!r}: {key} takes a{'n integer' if kind is int else ' number'}")
    return options


def build_step_cache(name: str, metadata: dict | None = None, checkpoint: str = "CHECKPOINT",
                     **options) -> StepCache | None:
    """The policy ``name`` for a checkpoint (``none`` gives None); ``options`` are its settings."""
    if name == "none":
        return None
    if name not in REGISTRY:
        raise ValueError(f"unknown step cache {name!r}; choose one of {', '.join(policy_names())}")
    unknown = set(options) - set(REGISTRY[name].options)
    if unknown:
        raise ValueError(f"--step-cache {name} has no option {', '.join(sorted(unknown))}; "
                         f"its options: {', '.join(REGISTRY[name].options) or '(none)'}")
    return REGISTRY[name].from_checkpoint(metadata or {}, checkpoint, **options)
