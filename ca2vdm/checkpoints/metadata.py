"""What a video model's weights file records besides its weights: typed, versioned, and older files still read.

Version 2 (``metadata_version``) records the sampler's settings (``sampler``, :class:`~ca2vdm.config.SamplerSettings`)
next to the model config, the codec, the step-cache calibrations, the class names and the training step. Files
written before versions (1) kept the sampler settings in the training config's ``diffusion_config``; they are read
from there. Everything a file records stays available as ``raw`` (training provenance: ``train_config``,
``diffusion_config``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ca2vdm.config import ModelConfig, SamplerSettings
from ca2vdm.errors import CheckpointError, SettingError

VERSION = 2
CALIBRATIONS = ("teacache_coefficients", "magcache_ratios")  # step-cache calibrations (ca2vdm calibrate)
PIXELS = {"kind": "pixel"}


@dataclass(frozen=True)
class CheckpointMetadata:
    """A video model checkpoint's metadata."""
    model: ModelConfig
    sampler: SamplerSettings = field(default_factory=SamplerSettings)  # how it is sampled unless told otherwise
    codec: Mapping[str, Any] = field(default_factory=lambda: dict(PIXELS))  # pixels, or the autoencoder it works in
    calibration: Mapping[str, list[float]] = field(default_factory=dict)  # by name, e.g. teacache_coefficients
    class_names: list[str] | None = None  # one per label, when the checkpoint names its classes
    step: int | None = None               # the training step it was saved at
    caption_words: list[str] | None = None  # a text model: the words of its training captions, when recorded
    raw: Mapping[str, Any] = field(default_factory=dict)  # every recorded entry, decoded
    version: int = VERSION

    @property
    def pixel_space(self) -> bool:
        """Whether the model works on pixels (its samples are clamped to [-1, 1]) rather than latents."""
        return self.codec.get("kind", "pixel") == "pixel"

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], model: ModelConfig, source: str = "checkpoint") -> CheckpointMetadata:
        """Read the decoded metadata of a weights file of any version; CheckpointError naming ``source`` if it
        cannot be read."""
        version = raw.get("metadata_version", 1)
        if not isinstance(version, int) or version > VERSION:
            raise CheckpointError(f"{source} records metadata version {version!r}; this ca2vdm reads versions up to "
                                  f"{VERSION}: upgrade ca2vdm")
        recorded = raw.get("sampler") if version >= 2 else raw.get("diffusion_config")
        try:
            sampler = SamplerSettings.from_dict(recorded if isinstance(recorded, Mapping) else {})
        except SettingError as e:
            raise CheckpointError(f"{source} records sampler settings this version cannot use: {e}") from None
        codec = raw.get("codec") if isinstance(raw.get("codec"), Mapping) else PIXELS
        names = raw.get("class_names")
        valid_names = isinstance(names, list) and len(names) == model.num_classes and all(
            isinstance(n, str) for n in names)
        step, seen = raw.get("step"), raw.get("caption_words")
        seen = seen if isinstance(seen, list) and all(isinstance(w, str) for w in seen) else None
        return cls(model, sampler, dict(codec), {k: list(raw[k]) for k in CALIBRATIONS if raw.get(k)},
                   names if valid_names else None, step if isinstance(step, int) else None, seen, dict(raw), version)

    def entries(self) -> dict[str, Any]:
        """What a writer records (besides ``model_config``): the raw entries updated with the typed ones."""
        out = {k: v for k, v in self.raw.items() if k != "model_config"}
        out.update(metadata_version=VERSION, sampler=self.sampler.to_dict(), codec=dict(self.codec),
                   **{k: list(v) for k, v in self.calibration.items()})
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.step is not None:
            out["step"] = self.step
        if self.caption_words is not None:
            out["caption_words"] = list(self.caption_words)
        return out
