"""Typed configuration (OmegaConf structured configs), the model registry and validation.

A YAML file names a registered model (``model.name``) and may override any of its fields; every other section
has defaults. Unknown keys, wrong types and inconsistent sizes are reported before any work starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .codec import CODEC_KINDS, CodecConfig


@dataclass
class ModelConfig:
    name: str = "tiny"
    in_channels: int = 3
    resolution: int = 16
    patch_size: int = 4
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    num_classes: int = 0            # 0: unconditional; otherwise labels 0..num_classes-1 plus a learned null label
    chunk_frames: int = 2           # frames denoised together (bidirectional inside, causal across chunks)
    first_frame_chunk: bool = True  # frame 0 is a chunk of its own (image-to-video condition)
    max_context_frames: int = 5     # conditioning frames kept in the KV cache (training clip = this + a chunk)
    prefix_frames: int = 0          # prefix-enhanced spatial attention over the last k conditioning frames; 0 = off
    sink_frames: int = 0            # attention sinks: the video's first k frames are never evicted; 0 = off
    attention_backend: str = "auto"  # auto (flex to train on CUDA, else flash or sdpa) | sdpa | flash | flex

    @property
    def clip_frames(self) -> int:
        """Frames per training clip: the longest sequence the model ever attends over."""
        return self.max_context_frames + self.chunk_frames

    @property
    def rope_period(self) -> int:
        """Period of the temporal rotary phase; exceeds every query-key distance in the window."""
        return self.clip_frames + self.chunk_frames


MODEL_CONFIGS: dict[str, dict] = {
    "tiny": {},
    "demo": dict(resolution=32, patch_size=4, hidden_size=128, depth=4, num_heads=4, num_classes=3, chunk_frames=4,
                 max_context_frames=9),
    "small": dict(resolution=64, patch_size=4, hidden_size=384, depth=12, num_heads=6, chunk_frames=4,
                  max_context_frames=25, prefix_frames=3),
    "base": dict(resolution=128, patch_size=4, hidden_size=768, depth=12, num_heads=12, chunk_frames=8,
                 max_context_frames=25, prefix_frames=3),
    # Ca2-VDM's published scale (CausalSTDiT2-XL/2): SD-VAE latents of 256x256 frames (4 x 32 x 32), 256 tokens a frame
    "ca2vdm-xl": dict(in_channels=4, resolution=32, patch_size=2, hidden_size=1152, depth=28, num_heads=16,
                      chunk_frames=8, max_context_frames=25, prefix_frames=3),
}


OBJECTIVES = ("all", "chunk")  # diffusion.objective: every chunk per step (teacher forcing) | one random chunk
TRACKERS = ("none", "tensorboard", "wandb")  # train.log_with: accelerate trackers beside metrics.jsonl


@dataclass
class DiffusionConfig:
    steps: int = 16             # Euler steps per chunk
    shift: float = 1.0          # timestep shift (SD3): >1 spends more steps at high noise
    cond_noise: float = 0.05    # prefix perturbation t_p applied to conditioning frames (model still told t=0)
    cfg_scale: float = 1.0      # classifier-free guidance scale at inference; 1 = off
    label_dropout: float = 0.1  # training: probability of replacing the label by the null label
    objective: str = "chunk"    # training loss: chunk (one random chunk) | all (every chunk, teacher forcing)
    self_rollout: float = 0.0   # share of training steps conditioned on the model's own samples (ca2vdm.rollout)
    rollout_t: float = 1.0      # a rolled-out chunk starts from the real one perturbed to this time (1 = free)
    rollout_steps: int = 8      # Euler steps per rolled-out chunk


@dataclass
class DataConfig:
    root: str = "data/shapes"
    manifest: Optional[str] = None
    frame_stride: int = 1
    clips_per_video: int = 1    # items per video in an epoch (many clips fit in a long video)
    num_workers: int = -1       # DataLoader workers per process; -1 = auto (0 on a CPU-only run, else up to 8)
    latents: Optional[str] = None   # a directory of encoded latents (scripts/encode_latents.py): no video decoding


@dataclass
class TrainConfig:
    output_dir: str = "runs/tiny"
    seed: int = 0
    batch_size: int = 4         # per process
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_steps: int = 200
    ema_decay: float = 0.999
    mixed_precision: str = "auto"  # auto (bf16 on GPU, no on CPU) | no | bf16 | fp16
    log_every: int = 10
    save_every: int = 100
    keep_last: int = 3
    sample_every: int = 0       # 0 = no periodic sample videos
    init_from: Optional[str] = None  # start from these weights (a .safetensors file or checkpoint dir): fine-tuning
    nonfinite: str = "stop"     # what to do on a NaN/inf loss: stop | skip
    activation_checkpointing: bool = False  # recompute each block in the backward pass (ca2vdm.parallelize)
    fsdp: bool = False          # shard the model over the launch's processes with FSDP2 (ca2vdm.parallelize)
    log_with: str = "none"      # trackers beside metrics.jsonl: none | tensorboard | wandb (ca2vdm.trackers)


@dataclass
class AutoencoderConfig:
    """Our own per-frame autoencoder (``train/train_autoencoder.py``): a diffusers architecture trained here."""
    architecture: str = "AutoencoderKL"     # AutoencoderKL | AutoencoderTiny
    resolution: int = 128                   # pixel size of the training frames
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # down-sampling 2^(n-1)
    latent_channels: int = 4
    layers_per_block: int = 1
    kl_weight: float = 1.0e-6               # AutoencoderKL only: weight of the KL term
    frames_per_clip: int = 4                # frames per training item (each frame is encoded on its own)
    holdout_every: int = 8                  # every n-th video is held out for the reconstruction PSNR


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)  # pixels <-> the model's space (in_channels, resolution)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # train/train_autoencoder.py only


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts."""


_POSITIVE_MODEL_FIELDS = ("in_channels", "resolution", "patch_size", "hidden_size", "depth", "num_heads",
                          "chunk_frames", "max_context_frames")


def model_config(name: str, **overrides) -> ModelConfig:
    """A registered model configuration with optional field overrides."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown model name {name!r}; registered: {sorted(MODEL_CONFIGS)}")
    return validate_model(ModelConfig(**{**MODEL_CONFIGS[name], **overrides, "name": name}))


def validate_model(m: ModelConfig) -> ModelConfig:
    """Check that the sizes fit together; raise ConfigError naming the field and the fix."""
    problems = [f"model.{k} must be >= 1, got {getattr(m, k)}" for k in _POSITIVE_MODEL_FIELDS if getattr(m, k) < 1]
    if m.num_classes < 0:
        problems.append(f"model.num_classes must be >= 0 (0 = unconditional), got {m.num_classes}")
    if m.mlp_ratio <= 0:
        problems.append(f"model.mlp_ratio must be > 0, got {m.mlp_ratio}")
    if problems:  # the size checks below would divide by zero
        raise ConfigError("invalid model config: " + "; ".join(problems))
    if m.resolution % m.patch_size:
        problems.append(f"model.resolution={m.resolution} is not divisible by model.patch_size={m.patch_size}")
    if m.hidden_size % m.num_heads or (m.hidden_size // m.num_heads) % 2:
        problems.append(f"model.hidden_size={m.hidden_size} must split into model.num_heads={m.num_heads} heads of "
                        "an even size")
    if m.chunk_frames < 1:
        problems.append(f"model.chunk_frames must be >= 1, got {m.chunk_frames}")
    if m.max_context_frames < m.chunk_frames:
        problems.append(f"model.max_context_frames={m.max_context_frames} is shorter than a chunk "
                        f"(model.chunk_frames={m.chunk_frames}); the window must hold at least one chunk")
    elif (m.max_context_frames - int(m.first_frame_chunk)) % m.chunk_frames:
        layout = "1 + k * chunk_frames" if m.first_frame_chunk else "k * chunk_frames"
        problems.append(f"model.max_context_frames={m.max_context_frames} must be {layout} so that training clips "
                        "end on a chunk boundary")
    if not 0 <= m.prefix_frames <= m.max_context_frames:
        problems.append(f"model.prefix_frames={m.prefix_frames} must be in [0, max_context_frames]")
    if m.sink_frames and not (0 < m.sink_frames < m.max_context_frames
                              and (m.sink_frames - int(m.first_frame_chunk)) % m.chunk_frames == 0):
        layout = "1 + n * chunk_frames" if m.first_frame_chunk else "n * chunk_frames"
        problems.append(f"model.sink_frames={m.sink_frames} must be 0 (off) or whole chunks, {layout}, below "
                        f"model.max_context_frames={m.max_context_frames}")
    if m.attention_backend not in ("auto", "sdpa", "flash", "flex"):
        problems.append(f"model.attention_backend={m.attention_backend!r} must be auto, sdpa, flash or flex")
    if problems:
        raise ConfigError("invalid model config: " + "; ".join(problems))
    return m


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML + ``key=value`` overrides onto the registered model's fields and the typed defaults; validate."""
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
        name = OmegaConf.select(raw, "model.name", default="tiny")
        if name not in MODEL_CONFIGS:
            raise ConfigError(f"unknown model.name {name!r}; registered: {sorted(MODEL_CONFIGS)}")
        base = Config(model=ModelConfig(**{**MODEL_CONFIGS[name], "name": name}))
        config: Config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), raw))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        detail = (e.msg or str(e)).strip().splitlines()[0]
        raise ConfigError(f"bad config{f' key {key}' if key else ''}: {detail} (in {path or 'defaults'} + overrides "
                          f"{overrides}). Check the key name and type against ca2vdm/config.py") from None
    return validate(config)


def validate(config: Config) -> Config:
    """Check a whole config (sizes, ranges, required values); raise ConfigError naming every bad key."""
    validate_model(config.model)
    _validate_rest(config)
    return config


def _validate_rest(c: Config) -> None:
    problems = []
    for key in ("data.root", "train.output_dir"):  # required: no sensible default location
        section, name = key.split(".")
        value = getattr(getattr(c, section), name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key} is required (a folder path), got {value!r}")
    if c.codec.kind not in CODEC_KINDS:
        problems.append(f"codec.kind must be one of {', '.join(CODEC_KINDS)}, got {c.codec.kind!r}")
    elif c.codec.kind == "pixel" and c.model.in_channels != 3:
        problems.append(f"model.in_channels must be 3 with codec.kind=pixel (videos are RGB), got "
                        f"{c.model.in_channels}; use an autoencoder codec for latent channels")
    elif c.codec.kind != "pixel" and not c.codec.path:
        problems.append(f"codec.path is required with codec.kind={c.codec.kind} (a save_pretrained directory)")
    for key in ("train.save_every", "train.log_every", "train.keep_last", "data.frame_stride", "data.clips_per_video"):
        section, name = key.split(".")
        if getattr(getattr(c, section), name) < 1:
            problems.append(f"{key} must be >= 1, got {getattr(getattr(c, section), name)}")
    if c.data.num_workers < -1:
        problems.append(f"data.num_workers must be >= 0, or -1 for auto, got {c.data.num_workers}")
    for key in ("train.sample_every", "train.warmup_steps"):
        section, name = key.split(".")
        if getattr(getattr(c, section), name) < 0:
            problems.append(f"{key} must be >= 0, got {getattr(getattr(c, section), name)}")
    if not c.train.lr > 0:
        problems.append(f"train.lr must be > 0, got {c.train.lr}")
    if c.train.weight_decay < 0:
        problems.append(f"train.weight_decay must be >= 0, got {c.train.weight_decay}")
    if not 0 <= c.train.ema_decay <= 1:
        problems.append(f"train.ema_decay must be in [0, 1], got {c.train.ema_decay}")
    if not 0 <= c.diffusion.label_dropout <= 1:
        problems.append(f"diffusion.label_dropout must be in [0, 1], got {c.diffusion.label_dropout}")
    if not c.diffusion.shift > 0:
        problems.append(f"diffusion.shift must be > 0, got {c.diffusion.shift}")
    if c.diffusion.steps < 1:
        problems.append(f"diffusion.steps must be >= 1, got {c.diffusion.steps}")
    if not 0 <= c.diffusion.cond_noise < 1:
        problems.append(f"diffusion.cond_noise must be in [0, 1), got {c.diffusion.cond_noise}")
    if not 0 <= c.diffusion.self_rollout <= 1:
        problems.append(f"diffusion.self_rollout must be in [0, 1] (a share of steps), got {c.diffusion.self_rollout}")
    if not 0 < c.diffusion.rollout_t <= 1:
        problems.append(f"diffusion.rollout_t must be in (0, 1], got {c.diffusion.rollout_t}")
    if c.diffusion.rollout_steps < 1:
        problems.append(f"diffusion.rollout_steps must be >= 1, got {c.diffusion.rollout_steps}")
    if c.diffusion.objective not in OBJECTIVES:
        problems.append(f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, got {c.diffusion.objective!r}")
    if c.train.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        problems.append(f"train.mixed_precision must be auto, no, bf16 or fp16, got {c.train.mixed_precision!r}")
    if c.train.nonfinite not in ("stop", "skip"):
        problems.append(f"train.nonfinite must be stop or skip, got {c.train.nonfinite!r}")
    if c.train.log_with not in TRACKERS:
        problems.append(f"train.log_with must be one of {', '.join(TRACKERS)}, got {c.train.log_with!r}")
    if c.train.fsdp and c.train.mixed_precision == "fp16":
        problems.append("train.fsdp=true does not take train.mixed_precision=fp16 (its gradient scaler cannot see the "
                        "shards); use bf16")
    if c.train.fsdp and c.diffusion.self_rollout:
        problems.append("train.fsdp=true does not take diffusion.self_rollout (each process would roll out a different "
                        "number of sharded forward passes); set diffusion.self_rollout=0 or train.fsdp=false")
    if c.train.batch_size < 1 or c.train.grad_accum < 1 or c.train.max_steps < 1:
        problems.append("train.batch_size, train.grad_accum and train.max_steps must be >= 1")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def to_dict(model: ModelConfig) -> dict:
    """Plain dict of a model config (stored in checkpoints)."""
    return dataclasses.asdict(model)
