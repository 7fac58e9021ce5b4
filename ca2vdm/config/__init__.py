"""Configuration: typed, torch-free settings and the rules that relate them (the lowest layer with ``ca2vdm.errors``).

``model`` (the model's sizes and the registry of named sizes), ``layout`` (how frames split into chunks), ``training``
(one config per trainer, made of sections), ``lora`` (LoRA fine-tuning's section of it and the adapters front ends
apply), ``loading`` (YAML + ``key=value`` overrides), ``sampler`` (the sampler's settings, recorded in checkpoints
and offered by every front end) and ``presets`` (how published causal Wan models are sampled, for ``ca2vdm
export``). Nothing here imports torch, so a command line can build its parser from these types before torch loads.
Imports only :mod:`ca2vdm.errors`.
"""
from ca2vdm.config.layout import ChunkLayout, TemporalCompression
from ca2vdm.config.loading import load_config
from ca2vdm.config.lora import LoraConfig, parse_lora
from ca2vdm.config.model import (
                                 ARCHS,
                                 BACKENDS,
                                 MODEL_CONFIGS,
                                 POSITIONS,
                                 WAN_FIELDS,
                                 ModelConfig,
                                 model_config,
                                 to_dict,
                                 validate_model,
)
from ca2vdm.config.sampler import (
                                    CACHE_MODES,
                                    SEED_MAX,
                                    SWITCH_MODES,
                                    SamplerSettings,
                                    check_label,
                                    check_seed,
                                    sampler_setting,
                                    with_teacache_thresh,
)
from ca2vdm.config.step_caches import STEP_CACHE_NAMES, STEP_CACHES, StepCacheConfig, step_cache_config
from ca2vdm.config.training import (
                                    PRECISIONS,
                                    AutoencoderConfig,
                                    AutoencoderTrainingConfig,
                                    CodecConfig,
                                    Config,
                                    DataConfig,
                                    DiffusionConfig,
                                    DistillConfig,
                                    DistillTrainingConfig,
                                    RunConfig,
                                    TrainConfig,
                                    validate,
                                    validate_section,
)

__all__ = ["ARCHS", "BACKENDS", "ChunkLayout", "TemporalCompression", "load_config", "MODEL_CONFIGS", "ModelConfig",
           "model_config", "to_dict", "validate_model", "POSITIONS", "WAN_FIELDS", "LoraConfig", "parse_lora",
           "PRECISIONS", "AutoencoderConfig", "AutoencoderTrainingConfig", "CodecConfig", "Config", "DataConfig",
           "DiffusionConfig", "DistillConfig", "DistillTrainingConfig", "RunConfig", "TrainConfig", "validate",
           "validate_section", "CACHE_MODES", "SEED_MAX", "SamplerSettings",
           "check_label", "check_seed", "sampler_setting", "with_teacache_thresh", "STEP_CACHE_NAMES", "STEP_CACHES",
           "StepCacheConfig", "step_cache_config", "SWITCH_MODES"]
