"""The trainers' configurations: one typed config per trainer, made of sections that each concern reads.

Every trainer's config holds ``data`` and ``train`` (all the training loop reads); :class:`Config` adds what the video
model trainer needs (``model``, ``diffusion``, ``codec``), :class:`AutoencoderTrainingConfig` what our autoencoder
trainer needs (``autoencoder``) and :class:`DistillTrainingConfig` what the few-step distillation needs
(``distill``). Validation names every bad key and its allowed values before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ca2vdm.config.lora import LoraConfig, lora_problems
from ca2vdm.config.model import ModelConfig, validate_model
from ca2vdm.errors import ConfigError

CODEC_KINDS = ("pixel", "diffusers", "autoencoder")  # codec.kind (ca2vdm.encoders.codec)
PRECISIONS = ("fp32", "bf16", "fp16")  # the one precision vocabulary: training's mixed precision, sampling's dtype

OBJECTIVES = ("all", "chunk")  # diffusion.objective: every chunk per step (teacher forcing) | one random chunk
TRACKERS = ("none", "tensorboard", "wandb")  # train.log_with: accelerate trackers beside metrics.jsonl


@dataclass
class DiffusionConfig:
    steps: int = 16             # Euler steps per chunk
    shift: float = 1.0          # timestep shift (SD3): >1 spends more steps at high noise
    cond_noise: float = 0.05    # prefix perturbation t_p applied to conditioning frames (model still told t=0)
    cfg_scale: float = 1.0      # classifier-free guidance scale at inference; 1 = off
    label_dropout: float = 0.1  # training: probability of replacing the label by the null label
    caption_dropout: float = 0.1  # training a text model: probability of replacing the caption by the empty prompt
    objective: str = "chunk"    # training loss: chunk (one random chunk) | all (every chunk, teacher forcing)
    self_rollout: float = 0.0   # share of steps conditioned on the model's own samples (ca2vdm.training.rollout)
    rollout_t: float = 1.0      # a rolled-out chunk starts from the real one perturbed to this time (1 = free)
    rollout_steps: int = 8      # Euler steps per rolled-out chunk


@dataclass
class DataConfig:
    root: str = "data/shapes"
    manifest: Optional[str] = None
    frame_stride: int = 1
    clips_per_video: int = 1    # items per video in an epoch (many clips fit in a long video)
    num_workers: int = -1       # DataLoader workers per process; -1 = auto (0 on a CPU-only run, else up to 8)
    latents: Optional[str] = None   # a directory of encoded latents (ca2vdm encode-latents): no video decoding
    captions: Optional[str] = None  # a text model's caption manifest (JSONL or CSV); None: root/captions.jsonl


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
    mixed_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16 ("no": fp32)
    log_every: int = 10
    save_every: int = 100
    keep_last: int = 3
    sample_every: int = 0       # 0 = no periodic sample videos
    init_from: Optional[str] = None  # start from these weights (a .safetensors file or checkpoint dir): fine-tuning
    nonfinite: str = "stop"     # what to do on a NaN/inf loss: stop | skip
    activation_checkpointing: bool = False  # recompute each block in the backward pass (ca2vdm.training.parallelize)
    fsdp: bool = False          # shard the model over the launch's processes with FSDP2 (ca2vdm.training.parallelize)
    log_with: str = "none"      # trackers beside metrics.jsonl: none | tensorboard | wandb (ca2vdm.training.trackers)
    lora: Optional[LoraConfig] = None  # set (e.g. train.lora.rank=4): train a LoRA adapter on train.init_from only


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
class DistillConfig:
    """A few-step student distilled from a teacher checkpoint (``train/distill.py``, ``ca2vdm.training.distill_task``):
    ODE regression on the teacher's recorded trajectories (``data.root``: ``ca2vdm make-ode-pairs``), then DMD on
    the student's own rollouts (Self-Forcing). The student has the teacher's model config and records its sampler."""
    teacher: str = ""                       # the teacher's weights (.safetensors or a checkpoint directory)
    steps: int = 4                          # the student's denoising steps per chunk (recorded in its checkpoint)
    ode_steps: int = 300                    # training steps of ODE regression (stage 1) before DMD; 0: DMD only
    critic_ratio: int = 5                   # DMD: the student is stepped every critic_ratio critic steps
    critic_lr: float = 1.0e-4               # the critic's (fake score's) learning rate; the student's is train.lr
    guidance: Optional[float] = None        # the teacher's guidance scale as the real score; None: its recorded one
    regression_weight: float = 0.0          # DMD's student steps add this x the ODE regression loss on the batch's
    #                                         trajectories (DMD's regression term, Yin et al. 2024); 0: pure DMD
    min_t: float = 0.02                     # DMD and the critic: noise times drawn uniformly in [min_t, max_t]
    max_t: float = 0.98


@dataclass
class CodecConfig:
    kind: str = "pixel"                     # pixel | diffusers | autoencoder
    path: Optional[str] = None              # a save_pretrained directory (or a hub id where there is internet)
    subfolder: Optional[str] = None         # e.g. "vae" inside a full pipeline repository
    scaling_factor: Optional[float] = None  # None: the autoencoder config's
    shift_factor: Optional[float] = None    # None: the autoencoder config's (0 when it has none)


@dataclass
class RunConfig:
    """What every trainer's config holds: the data and the run (all the training loop reads)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class Config(RunConfig):
    """``train/train.py``: the causal video DiT."""
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)  # pixels <-> the model's space (in_channels, resolution)


@dataclass
class AutoencoderTrainingConfig(RunConfig):
    """``train/train_autoencoder.py``: our own per-frame autoencoder."""
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)


@dataclass
class DistillTrainingConfig(RunConfig):
    """``train/distill.py``: a few-step student of a video model (its sizes are the teacher's)."""
    distill: DistillConfig = field(default_factory=DistillConfig)


# why a trainer takes no train.lora; the video model's trainer (Config) takes one
LORA_REFUSED = {
    AutoencoderTrainingConfig: "our autoencoder trains every weight (it has no train.init_from)",
    DistillTrainingConfig: "distillation trains every weight of the student against its critic (to adapt a "
                           "distilled student, train the adapter with train/train.py and train.init_from=STUDENT)",
}


def validate(config: RunConfig) -> RunConfig:
    """Check a whole config (sizes, ranges, required values); raise ConfigError naming every bad key."""
    problems = _run_problems(config) + lora_problems(config.train.lora, config.train, LORA_REFUSED.get(type(config)))
    if isinstance(config, Config):
        validate_model(config.model)
        problems += _video_problems(config)
    if isinstance(config, DistillTrainingConfig):
        problems += _distill_problems(config.distill)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return config


def _run_problems(c: RunConfig) -> list[str]:
    """What is wrong with the ``data`` and ``train`` sections."""
    problems = []
    for key in ("data.root", "train.output_dir"):  # required: no sensible default location
        section, name = key.split(".")
        value = getattr(getattr(c, section), name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key} is required (a folder path), got {value!r}")
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
    if c.train.mixed_precision not in ("auto", "no", *PRECISIONS):
        problems.append(f"train.mixed_precision must be auto, {', '.join(PRECISIONS)} (no: fp32), got "
                        f"{c.train.mixed_precision!r}")
    if c.train.nonfinite not in ("stop", "skip"):
        problems.append(f"train.nonfinite must be stop or skip, got {c.train.nonfinite!r}")
    if c.train.log_with not in TRACKERS:
        problems.append(f"train.log_with must be one of {', '.join(TRACKERS)}, got {c.train.log_with!r}")
    if c.train.fsdp and c.train.mixed_precision == "fp16":
        problems.append("train.fsdp=true does not take train.mixed_precision=fp16 (its gradient scaler cannot see the "
                        "shards); use bf16")
    if c.train.batch_size < 1 or c.train.grad_accum < 1 or c.train.max_steps < 1:
        problems.append("train.batch_size, train.grad_accum and train.max_steps must be >= 1")
    return problems


def _video_problems(c: Config) -> list[str]:
    """What is wrong with the video model trainer's own sections (the model's sizes are checked apart)."""
    problems = []
    if c.codec.kind not in CODEC_KINDS:
        problems.append(f"codec.kind must be one of {', '.join(CODEC_KINDS)}, got {c.codec.kind!r}")
    elif c.codec.kind == "pixel" and c.model.in_channels != 3:
        problems.append(f"model.in_channels must be 3 with codec.kind=pixel (videos are RGB), got "
                        f"{c.model.in_channels}; use an autoencoder codec for latent channels")
    elif c.codec.kind != "pixel" and not c.codec.path:
        problems.append(f"codec.path is required with codec.kind={c.codec.kind} (a save_pretrained directory)")
    d = c.diffusion
    for name in ("label_dropout", "caption_dropout"):
        if not 0 <= getattr(d, name) <= 1:
            problems.append(f"diffusion.{name} must be in [0, 1], got {getattr(d, name)}")
    if not d.shift > 0:
        problems.append(f"diffusion.shift must be > 0, got {d.shift}")
    if d.steps < 1:
        problems.append(f"diffusion.steps must be >= 1, got {d.steps}")
    if not 0 <= d.cond_noise < 1:
        problems.append(f"diffusion.cond_noise must be in [0, 1), got {d.cond_noise}")
    if not 0 <= d.self_rollout <= 1:
        problems.append(f"diffusion.self_rollout must be in [0, 1] (a share of steps), got {d.self_rollout}")
    if not 0 < d.rollout_t <= 1:
        problems.append(f"diffusion.rollout_t must be in (0, 1], got {d.rollout_t}")
    if d.rollout_steps < 1:
        problems.append(f"diffusion.rollout_steps must be >= 1, got {d.rollout_steps}")
    if d.objective not in OBJECTIVES:
        problems.append(f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, got {d.objective!r}")
    if c.train.fsdp and d.self_rollout:
        problems.append("train.fsdp=true does not take diffusion.self_rollout (each process would roll out a different "
                        "number of sharded forward passes); set diffusion.self_rollout=0 or train.fsdp=false")
    return problems


def _distill_problems(d: DistillConfig) -> list[str]:
    """What is wrong with the ``distill`` section."""
    problems = []
    if not d.teacher.strip():
        problems.append("distill.teacher is required (the teacher's .safetensors file or checkpoint directory)")
    for key in ("steps", "critic_ratio"):
        if getattr(d, key) < 1:
            problems.append(f"distill.{key} must be >= 1, got {getattr(d, key)}")
    if d.ode_steps < 0:
        problems.append(f"distill.ode_steps must be >= 0 (0: DMD only), got {d.ode_steps}")
    if d.regression_weight < 0:
        problems.append(f"distill.regression_weight must be >= 0, got {d.regression_weight}")
    if not d.critic_lr > 0:
        problems.append(f"distill.critic_lr must be > 0, got {d.critic_lr}")
    if not 0 < d.min_t < d.max_t < 1:
        problems.append(f"distill.min_t and distill.max_t must satisfy 0 < min_t < max_t < 1, got {d.min_t} and "
                        f"{d.max_t}")
    return problems
