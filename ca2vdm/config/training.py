"""The trainers' configurations: one typed config per trainer, made of sections that each concern reads.

Every trainer's config holds ``data`` and ``train`` (all the training loop reads); :class:`Config` adds what the video
model trainer needs (``model``, ``diffusion``, ``codec``), :class:`AutoencoderTrainingConfig` what our autoencoder
trainer needs (``autoencoder``) and :class:`DistillTrainingConfig` what the few-step distillation needs
(``distill``). Every field is declared with :func:`~ca2vdm.config.options.setting` (its type, range and help, as the
sampler's are; the sampler's own fields take the sampler's declaration, :func:`~ca2vdm.config.sampler.sampler_setting`),
so :func:`validate` checks them all in one walk and names every bad key and what it accepts before any work starts;
only the rules that relate fields are written by hand (each section's or config's ``rules``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ca2vdm.config.lora import LoraConfig, lora_problems
from ca2vdm.config.model import ModelConfig, validate_model
from ca2vdm.config.options import setting, setting_problems
from ca2vdm.config.sampler import SamplerSettings, sampler_setting
from ca2vdm.config.step_caches import MAX_STEPS
from ca2vdm.errors import ConfigError

CODEC_KINDS = ("pixel", "diffusers", "autoencoder")  # codec.kind (ca2vdm.encoders.codec)
PRECISIONS = ("fp32", "bf16", "fp16")  # the one precision vocabulary: training's mixed precision, sampling's dtype
MIXED_PRECISIONS = ("auto", "no", *PRECISIONS)  # train.mixed_precision: auto (bf16 on GPU, fp32 on CPU); no: fp32
OBJECTIVES = ("all", "chunk")  # diffusion.objective: every chunk per step (teacher forcing) | one random chunk
TRACKERS = ("none", "tensorboard", "wandb")  # train.log_with: accelerate trackers beside metrics.jsonl
NONFINITE = ("stop", "skip")  # train.nonfinite: what a NaN/inf loss does
AUTOENCODERS = ("AutoencoderKL", "AutoencoderTiny")  # autoencoder.architecture (diffusers classes)
TRAIN_SEED_MAX = 2 ** 32 - 1  # numpy's seeds (accelerate's set_seed seeds numpy too)


@dataclass
class DiffusionConfig:
    """``diffusion``: the flow-matching objective, and the sampler settings the trained checkpoint records."""
    steps: int = sampler_setting("steps")
    shift: float = sampler_setting("shift")
    cond_noise: float = sampler_setting("cond_noise")
    cfg_scale: float = sampler_setting("cfg_scale")
    label_dropout: float = setting(0.1, "probability of replacing a training label by the null label", low=0, high=1)
    caption_dropout: float = setting(0.1, "training a text model: probability of replacing the caption by the empty "
                                     "prompt", low=0, high=1)
    objective: str = setting("chunk", "the loss of a step: chunk (one random chunk) or all (every chunk, teacher "
                             "forcing)", choices=OBJECTIVES)
    self_rollout: float = setting(0.0, "share of steps conditioned on the model's own samples "
                                  "(ca2vdm.training.rollout)", low=0, high=1)
    rollout_t: float = setting(1.0, "a rolled-out chunk starts from the real one perturbed to this time (1 = free)",
                               low=0, low_open=True, high=1)
    rollout_steps: int = setting(8, "Euler steps per rolled-out chunk", low=1, high=MAX_STEPS)

    def sampler(self) -> SamplerSettings:
        """The sampler settings a checkpoint of this run records: this section's fields that are sampler settings."""
        names = {f.name for f in dataclasses.fields(SamplerSettings)}
        return SamplerSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names})


@dataclass
class DataConfig:
    """``data``: where the training clips come from."""
    root: str = setting("data/shapes", "a folder path: the training videos, or for distillation the teacher's "
                        "recorded trajectories", required=True)
    manifest: Optional[str] = setting(None, "the labels manifest (JSONL); null: root/labels.jsonl", kind=str)
    frame_stride: int = setting(1, "take every n-th frame of a video", low=1)
    clips_per_video: int = setting(1, "items per video in an epoch (many clips fit in a long video)", low=1)
    num_workers: int = setting(-1, "DataLoader workers per process (-1: auto, 0 on a CPU-only run, else up to 8)",
                               low=-1, note="-1: auto")
    latents: Optional[str] = setting(None, "a directory of encoded latents (ca2vdm encode-latents): no video "
                                     "decoding", kind=str)
    captions: Optional[str] = setting(None, "a text model's caption manifest (JSONL or CSV); null: "
                                      "root/captions.jsonl", kind=str)


@dataclass
class TrainConfig:
    """``train``: the run (what the training loop reads)."""
    output_dir: str = setting("runs/tiny", "a folder path: checkpoints, metrics and samples", required=True)
    seed: int = setting(0, "seed of the data order and of every random draw", low=0, high=TRAIN_SEED_MAX)
    batch_size: int = setting(4, "clips per batch, per process", low=1)
    grad_accum: int = setting(1, "batches accumulated per optimizer step", low=1)
    lr: float = setting(3e-4, "AdamW's learning rate (after warm-up, cosine to a tenth)", low=0, low_open=True)
    weight_decay: float = setting(0.0, "AdamW's weight decay", low=0)
    warmup_steps: int = setting(20, "steps of linear learning-rate warm-up", low=0)
    max_steps: int = setting(200, "optimizer steps of the run", low=1)
    ema_decay: float = setting(0.999, "decay of the EMA weights that checkpoints publish", low=0, high=1)
    mixed_precision: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16 (no: fp32)",
                                   choices=MIXED_PRECISIONS)
    log_every: int = setting(10, "steps between lines of metrics.jsonl", low=1)
    save_every: int = setting(100, "steps between checkpoints", low=1)
    keep_last: int = setting(3, "checkpoints kept", low=1)
    sample_every: int = setting(0, "steps between periodic samples (0: none)", low=0)
    init_from: Optional[str] = setting(None, "start from these weights (a .safetensors file or checkpoint "
                                       "directory): fine-tuning", kind=str)
    nonfinite: str = setting("stop", "what a NaN/inf loss does: stop, or skip the batch", choices=NONFINITE)
    activation_checkpointing: bool = setting(False, "recompute each block in the backward pass "
                                             "(ca2vdm.training.parallelize)")
    fsdp: bool = setting(False, "shard the model over the launch's processes with FSDP2 "
                         "(ca2vdm.training.parallelize)")
    log_with: str = setting("none", "trackers beside metrics.jsonl (ca2vdm.training.trackers)", choices=TRACKERS)
    lora: Optional[LoraConfig] = None  # set (e.g. train.lora.rank=4): train a LoRA adapter on train.init_from only

    def rules(self) -> list[str]:
        if self.fsdp and self.mixed_precision == "fp16":
            return ["train.fsdp=true does not take train.mixed_precision=fp16 (its gradient scaler cannot see the "
                    "shards); use bf16"]
        return []


@dataclass
class AutoencoderConfig:
    """``autoencoder``: our own per-frame autoencoder (``train/train_autoencoder.py``), a diffusers architecture
    trained here."""
    architecture: str = setting("AutoencoderKL", "the diffusers class", choices=AUTOENCODERS)
    resolution: int = setting(128, "pixel size of the training frames", low=1)
    block_out_channels: list[int] = setting(lambda: [32, 64, 64], "channels of each block (down-sampling "
                                            "2^(n-1))", kind=list, item=int, low=1)
    latent_channels: int = setting(4, "channels of a latent", low=1)
    layers_per_block: int = setting(1, "layers of each block", low=1)
    kl_weight: float = setting(1.0e-6, "AutoencoderKL only: weight of the KL term", low=0)
    frames_per_clip: int = setting(4, "frames per training item (each frame is encoded on its own)", low=1)
    holdout_every: int = setting(8, "every n-th video is held out for the reconstruction PSNR", low=1)

    @property
    def factor(self) -> int:
        """Spatial down-sampling of the architecture."""
        return 2 ** (len(self.block_out_channels) - 1)

    def rules(self) -> list[str]:
        if self.architecture == "AutoencoderTiny" and len(set(self.block_out_channels)) > 1:
            return [f"autoencoder.block_out_channels={self.block_out_channels}: AutoencoderTiny needs the same "
                    "channel count in every block (e.g. [64, 64, 64])"]
        if self.resolution % self.factor:
            return [f"autoencoder.resolution={self.resolution} must be a positive multiple of the down-sampling "
                    f"factor {self.factor} (2^(len(block_out_channels) - 1))"]
        return []


@dataclass
class DistillConfig:
    """``distill``: a few-step student distilled from a teacher checkpoint (``train/distill.py``,
    ``ca2vdm.training.distill_task``): ODE regression on the teacher's recorded trajectories (``data.root``:
    ``ca2vdm make-ode-pairs``), then DMD on the student's own rollouts (Self-Forcing). The student has the
    teacher's model config and records its sampler."""
    teacher: str = setting("", "the teacher's .safetensors file or checkpoint directory", required=True)
    steps: int = sampler_setting("steps", default=4, help="the student's denoising steps per chunk (recorded in its "
                                 "checkpoint)")
    ode_steps: int = setting(300, "training steps of ODE regression (stage 1) before DMD", low=0,
                             note="0: DMD only")
    critic_ratio: int = setting(5, "DMD: the student is stepped every critic_ratio critic steps", low=1)
    critic_lr: float = setting(1.0e-4, "the critic's (fake score's) learning rate; the student's is train.lr", low=0,
                               low_open=True)
    guidance: Optional[float] = sampler_setting("cfg_scale", default=None, help="the teacher's guidance scale as "
                                                "the real score; null: its recorded one")
    regression_weight: float = setting(0.0, "DMD's student steps add this x the ODE regression loss on the batch's "
                                       "trajectories (DMD's regression term, Yin et al. 2024); 0: pure DMD", low=0)
    min_t: float = setting(0.02, "DMD and the critic: noise times drawn uniformly in [min_t, max_t]", low=0,
                           low_open=True, high=1, high_open=True)
    max_t: float = setting(0.98, "DMD and the critic: noise times drawn uniformly in [min_t, max_t]", low=0,
                           low_open=True, high=1, high_open=True)
    rollout_chunks: Optional[int] = setting(None, "DMD: chunks of the student's rollout after the first frame (as "
                                            "--chunks counts them); DMD and the critic score a window of the "
                                            "training clip's chunks anywhere in it", kind=int, low=1,
                                            note="null: the training clip's (the window at the start)")
    switch_share: float = setting(0.0, "DMD: share of rollouts whose condition (prompt or label) switches at a "
                                  "random chunk inside the window (recache, as at inference)", low=0, high=1)
    teacher_switch: str = setting("flush", "DMD: how the teacher reads a window across a switch: flush (the sinks and "
                                  "the last frame before it, then the new condition: the target of a switch) or "
                                  "recache (every frame the student read)", choices=("flush", "recache"))
    critic_dropout: float = setting(0.1, "the critic's loss: share of its rows conditioned on nothing (the empty "
                                    "prompt or the null label), as caption dropout", low=0, high=1)

    def rules(self) -> list[str]:
        if self.min_t >= self.max_t:
            return [f"distill.min_t and distill.max_t must satisfy 0 < min_t < max_t < 1, got {self.min_t} and "
                    f"{self.max_t}"]
        return []


@dataclass
class CodecConfig:
    """``codec``: pixels <-> the model's space (ca2vdm.encoders.codec)."""
    kind: str = setting("pixel", "pixel (the model works on pixels), diffusers (a pretrained autoencoder) or "
                        "autoencoder (ours)", choices=CODEC_KINDS)
    path: Optional[str] = setting(None, "a save_pretrained directory (or a hub id where there is internet)",
                                  kind=str)
    subfolder: Optional[str] = setting(None, "e.g. vae inside a full pipeline repository", kind=str)
    scaling_factor: Optional[float] = setting(None, "latents are scaled by this; null: the autoencoder config's",
                                              kind=float, low=0, low_open=True)
    shift_factor: Optional[float] = setting(None, "latents are shifted by this; null: the autoencoder config's (0 "
                                            "when it has none)", kind=float)


@dataclass
class RunConfig:
    """What every trainer's config holds: the data and the run (all the training loop reads)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def rules(self) -> list[str]:
        """The rules that relate sections (each section's own rules and every field's range are checked first)."""
        return lora_problems(self.train.lora, self.train, LORA_REFUSED.get(type(self)))


@dataclass
class Config(RunConfig):
    """``train/train.py``: the causal video DiT."""
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)  # pixels <-> the model's space (in_channels, resolution)

    def rules(self) -> list[str]:
        problems = super().rules()
        if self.codec.kind == "pixel" and self.model.in_channels != 3:
            problems.append(f"model.in_channels must be 3 with codec.kind=pixel (videos are RGB), got "
                            f"{self.model.in_channels}; use an autoencoder codec for latent channels")
        elif self.codec.kind != "pixel" and not self.codec.path:
            problems.append(f"codec.path is required with codec.kind={self.codec.kind} (a save_pretrained "
                            "directory)")
        if self.train.fsdp and self.diffusion.self_rollout:
            problems.append("train.fsdp=true does not take diffusion.self_rollout (each process would roll out a "
                            "different number of sharded forward passes); set diffusion.self_rollout=0 or "
                            "train.fsdp=false")
        return problems


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
    """Check a whole config; raise ConfigError naming every bad key. A video model's sizes first (the model's own
    checks), then every declared field of every section (each stored as its declared type), then the rules that
    relate fields (:func:`~ca2vdm.config.options.setting_problems`)."""
    if isinstance(config, Config):
        validate_model(config.model)
    problems = setting_problems(config)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return config


def validate_section(section, name: str):
    """One section built on its own (e.g. an :class:`AutoencoderConfig` in code), checked as :func:`validate`
    checks it inside a config; ConfigError naming every bad ``name.*`` key."""
    problems = setting_problems(section, name)
    if problems:
        raise ConfigError(f"invalid {name} config: " + "; ".join(problems))
    return section
