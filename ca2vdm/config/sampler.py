"""The sampler's settings: one typed object recorded in a checkpoint and overridden by every front end.

A checkpoint records how it is sampled (:class:`SamplerSettings` in its metadata,
:mod:`ca2vdm.checkpoints.metadata`); the command line's flags are generated from these fields
(:mod:`ca2vdm.cli.args`), the Python API takes them as keywords (``load_pipeline(path, steps=8)``) and the server as
fields of its messages. Every value is checked here, once, whatever the front end. What identifies one video (seed,
label) is checked here too (:func:`check_seed`, :func:`check_label`).
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ca2vdm.config.model import ModelConfig
from ca2vdm.config.options import Declared, check_fields, declared_field, setting
from ca2vdm.config.step_caches import MAX_STEPS, STEP_CACHE_NAMES, step_cache_config
from ca2vdm.errors import SettingError

CACHE_MODES = ("kv", "none", "full")  # conditioning: the shared KV cache, window recompute, all-frame recompute
SWITCH_MODES = ("recache", "keep", "reset", "flush")  # a label or prompt changed mid-video: what happens to the window
SINK_ROPES = ("adjacent", "original")  # where attention sinks sit in the rotary positions
SEED_MAX = 2 ** 64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
SEED = Declared(int, "random seed (the same seed, the same video)", low=0, high=SEED_MAX)
VERSION = 1  # of the recorded form (to_dict); from_dict reads every version up to this one


@dataclass(frozen=True)
class SamplerSettings:
    """How a model is sampled. Unset keywords of :meth:`replace` keep the recorded value."""
    steps: int = setting(16, "denoising steps per chunk", low=1, high=MAX_STEPS)
    shift: float = setting(1.0, "timestep shift of the sampler: > 1 spends more of the steps at high noise, where a "
                           "chunk's layout and brightness are decided", low=0, low_open=True, high=1000)
    cfg_scale: float = setting(1.0, "classifier-free guidance scale (1 = off); only with a label: without one there "
                               "is nothing to guide, and one branch runs", low=-1000, high=1000)
    cond_noise: float = setting(0.05, "prefix perturbation: the noise level of the conditioning frames (told t=0)",
                                low=0, high=1, high_open=True)
    cache: str = setting("kv", "kv: the shared KV cache (Ca2-VDM); none: recompute the conditioning window at every "
                         "step; full: recompute every earlier frame (a benchmark baseline)", choices=CACHE_MODES)
    step_cache: str = setting("none", "skip or forecast denoising passes inside each chunk",
                              choices=STEP_CACHE_NAMES)
    step_cache_options: Mapping[str, Any] = setting(dict, "settings of the step cache (see docs/step-caching.md)",
                                                    kind=dict)
    sink_frames: Optional[int] = setting(None, "attention sinks at inference: the video's first frames (whole chunks) "
                                         "kept in the window for good, the rest of it a ring (training-free: "
                                         "StreamingLLM, Deep Forcing's deep sink)", kind=int, low=0,
                                         note="null: the model's model.sink_frames")
    sink_rope: str = setting("adjacent", "the sinks' rotary positions: adjacent re-rotates them to sit just before the "
                             "oldest frame in the window (Deep Forcing, Rolling Sink); original keeps the positions "
                             "they were written at (StreamingLLM's), so their distance grows and wraps around the "
                             "period", choices=SINK_ROPES)

    def __post_init__(self) -> None:
        check_fields(self)
        config = step_cache_config(self.step_cache, self.step_cache_options)
        given = set(self.step_cache_options)  # only what was given is kept: defaults stay the policy's
        object.__setattr__(self, "step_cache_options",
                           {} if config is None else {k: v for k, v in config.options().items() if k in given})

    def replace(self, **changes: Any) -> SamplerSettings:
        """These settings with ``changes`` (None values ignored); a new ``step_cache`` drops the old one's options."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown sampler setting(s) {', '.join(sorted(unknown))}; the settings: "
                            f"{', '.join(f.name for f in dataclasses.fields(self))}")
        if changes.get("step_cache", self.step_cache) != self.step_cache:
            changes.setdefault("step_cache_options", {})
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The recorded form (JSON), with its version."""
        return {"version": VERSION, **dataclasses.asdict(self), "step_cache_options": dict(self.step_cache_options)}

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> SamplerSettings:
        """Settings recorded by :meth:`to_dict` (any version up to :data:`VERSION`), or the sampler fields of a
        training config's ``diffusion`` section (what checkpoints recorded before these settings existed)."""
        if recorded.get("version", VERSION) > VERSION:
            raise SettingError("sampler", recorded.get("version"), f"recorded by a newer ca2vdm (settings version "
                               f"{recorded.get('version')}; this one reads up to {VERSION}); upgrade ca2vdm")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in recorded.items() if k in names})


def sampler_sinks(settings: SamplerSettings, cfg: ModelConfig) -> int:
    """The attention sinks a model is sampled with: the settings' ``sink_frames``, else the model's; SettingError
    unless they are whole chunks from the first frame and leave room for the ring, or when ``sink_rope`` is asked of
    a cache mode without a KV cache."""
    sinks = cfg.sink_frames if settings.sink_frames is None else settings.sink_frames
    if sinks and (not cfg.layout.is_boundary(sinks) or sinks >= cfg.max_context_frames):
        raise SettingError("sink_frames", sinks, f"must be whole chunks from the first frame (e.g. "
                           f"{cfg.layout.start_of(1)}) and fewer than model.max_context_frames="
                           f"{cfg.max_context_frames}")
    if settings.sink_rope != "adjacent" and settings.cache != "kv":
        raise SettingError("sink_rope", settings.sink_rope, f"places the sinks of the KV cache: needs cache kv, not "
                           f"{settings.cache}")
    return sinks


def sampler_setting(name: str, **changes: Any) -> Any:
    """A dataclass field declared as :class:`SamplerSettings`' ``name`` is: its kind, range, help and default, with
    ``changes`` (another ``default``, ``help``; a default of None makes it optional). A training config's sampler
    fields take their declaration from here, so a range is written once."""
    field = next(f for f in dataclasses.fields(SamplerSettings) if f.name == name)
    default = changes.pop("default", field.default)
    changes.setdefault("optional", default is None)
    return declared_field(default, dataclasses.replace(field.metadata["declared"], **changes))


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed is a whole number in 0 .. 2**64 - 1 (what torch's generators take)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise SettingError(name, seed, f"must be a whole number in 0 .. 2**64 - 1 ({SEED_MAX})")
    return seed


def check_label(label: Any, num_classes: int) -> int | None:
    """A label is one of the model's classes, 0 .. num_classes - 1 (its null label is for guidance only), or None."""
    if label is None:
        return None
    if num_classes == 0:
        raise SettingError("label", label, "this model is unconditional; give no label")
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise SettingError("label", label, f"must be a whole number, one of this model's labels 0 to "
                           f"{num_classes - 1} (or no label for an unconditional video)")
    if not 0 <= label < num_classes:
        raise SettingError("label", label, f"out of range: this model's labels are 0 to {num_classes - 1} (give no "
                           "label for an unconditional video)")
    return int(label)


def with_teacache_thresh(settings: SamplerSettings, threshold: float | None,
                         given: Mapping[str, Any] | None = None) -> SamplerSettings:
    """The legacy ``teacache_thresh`` setting (``--teacache-thresh``): TeaCache's threshold when the step cache is
    teacache and its options (``given``) do not set one; otherwise nothing."""
    if threshold is None:
        return settings
    threshold = TEACACHE_THRESH.check("teacache_thresh", threshold)
    if settings.step_cache != "teacache" or "threshold" in (given or {}):
        return settings
    return settings.replace(step_cache_options={**settings.step_cache_options, "threshold": threshold})


TEACACHE_THRESH = Declared(float, "TeaCache's threshold (the same as step_cache_options threshold; 0: every step)",
                           low=0)
