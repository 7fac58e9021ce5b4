"""Loading a trainer's config: a YAML file plus ``key=value`` overrides onto the typed defaults, then validation.

A video model's YAML names a registered model (``model.name``) and may override any of its fields; every other
section has defaults. Unknown keys, wrong types and inconsistent sizes are reported before any work starts.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ca2vdm.config.model import MODEL_CONFIGS, ModelConfig
from ca2vdm.config.training import Config, RunConfig, validate
from ca2vdm.errors import ConfigError


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[RunConfig] = Config) -> RunConfig:
    """Load YAML + ``key=value`` overrides onto ``schema``'s typed defaults (a video model :class:`Config`: onto the
    registered model's fields too); validate."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {path} not found; see configs/ for the shipped ones")
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.max_steps=100)")
    try:
        file_cfg = OmegaConf.load(path) if path else OmegaConf.create()
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    if not isinstance(file_cfg, DictConfig):
        raise ConfigError(f"config file {path} must be a mapping of sections (model:, diffusion:, data:, train:, "
                          f"codec:), got a {type(file_cfg).__name__}")
    try:
        raw = OmegaConf.merge(file_cfg, OmegaConf.from_dotlist(overrides))
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(_defaults(schema, raw)), raw))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        detail = (e.msg or str(e)).strip().splitlines()[0]
        raise ConfigError(f"bad config{f' key {key}' if key else ''}: {detail} (in {path or 'defaults'} + overrides "
                          f"{overrides}). Check the key name and type against ca2vdm/config/") from None
    return validate(config)


def _defaults(schema: type[RunConfig], raw: DictConfig) -> RunConfig:
    """The schema's defaults; a video model's start from the fields of the registered model it names."""
    if schema is not Config:
        return schema()
    name = OmegaConf.select(raw, "model.name", default="tiny")
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model.name {name!r}; registered: {sorted(MODEL_CONFIGS)}")
    return Config(model=ModelConfig(**{**MODEL_CONFIGS[name], "name": name}))
