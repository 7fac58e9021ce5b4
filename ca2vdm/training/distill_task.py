"""What ``train/distill.py`` trains: a few-step causal student of a video model, in two stages of one run.

1. ``distill.ode_steps`` steps of ODE regression on the teacher's recorded trajectories (``data.root``, written by
   ``ca2vdm make-ode-pairs``): the student learns to take the teacher's several steps in one
   (:func:`~ca2vdm.training.dmd.trajectory_loss`), so that it is usable before DMD.
2. DMD on its own rollouts (Self-Forcing; Self-Forcing++ and LongLive's long tuning with ``distill.rollout_chunks``
   beyond the window): the student rolls out through its KV cache, inference itself up to a window of the training
   clip's chunks placed anywhere in the rollout, and with gradients through one exit step per window chunk
   (:mod:`~ca2vdm.training.distill_rollout`); a share ``distill.switch_share`` of the rollouts switches its condition
   inside the window (recache). The window is scored by the frozen, guided teacher against a critic (initialised from
   the teacher) that learns the student's samples with the flow-matching loss, each reading the window as the student
   did, through its own cache (:mod:`~ca2vdm.training.distill_window`; across a switch the teacher flushes by
   default, ``distill.teacher_switch``). The critic is stepped every step, the student
   every ``distill.critic_ratio``-th (on those steps both are); ``distill.regression_weight`` adds the ODE regression
   to the student's DMD steps (DMD's regression term).

A text teacher distils a text student: its trajectories were sampled from prompts (their list is in the index), the
rollouts take the trajectories' prompts (a switch: another prompt of the list), the teacher is guided against the
empty prompt, and the critic's loss drops a share ``distill.critic_dropout`` of its prompts (labels, for a label
model) as caption dropout does.

The three models are parts of the task (:class:`~ca2vdm.training.task.Part`): the student is the published model
(its EMA is the checkpoint), the critic a second trained part, the teacher a frozen one; the loop shards all three
with ``train.fsdp`` and saves and resumes the student and the critic exactly. The student is a normal checkpoint:
the teacher's model config and codec, and its own sampler settings (``distill.steps`` steps, guidance baked in: one
branch, ``cfg_scale`` 1), so every front end samples it with no extra setting.
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

import torch

from ca2vdm.checkpoints import weights as ckpt
from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.config import DistillTrainingConfig, to_dict
from ca2vdm.data.trajectories import TrajectoryDataset
from ca2vdm.errors import CheckpointError, ConfigError, DataError
from ca2vdm.generation.api import load_text_encoder
from ca2vdm.models.registry import build_model
from ca2vdm.sampling.flow import timesteps
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training.distill_rollout import Condition, rollout_plan, self_rollout, trajectory_condition
from ca2vdm.training.distill_window import window_velocity
from ca2vdm.training.dmd import dmd_loss, flow_loss, trajectory_loss
from ca2vdm.training.ema import EMA
from ca2vdm.training.export import check_training_weights
from ca2vdm.training.samples import write_sample
from ca2vdm.training.task import Part


def generator_step(step: int, config: DistillTrainingConfig) -> bool:
    """Whether the student is stepped at ``step`` (0-based): always in ODE regression; in DMD at the last step of
    every ``critic_ratio`` steps, so the critic learns the student's samples for ``critic_ratio - 1`` steps first
    (and a ``train.log_every`` that is a multiple of ``critic_ratio`` logs the student's loss)."""
    d = config.distill
    return step < d.ode_steps or (step - d.ode_steps) % d.critic_ratio == d.critic_ratio - 1


class DistillTask:
    """A few-step student of ``distill.teacher`` (see the module docstring); data: the teacher's trajectories."""

    def __init__(self, config: DistillTrainingConfig, device: torch.device):
        d = config.distill
        self.teacher_model, self.teacher = ckpt.load_model(d.teacher)  # CheckpointError naming the file if unusable
        self.cfg = self.teacher.model
        self.text_encoder = load_text_encoder(self.teacher_model, d.teacher)
        if d.switch_share and not (self.cfg.num_classes or self.text_encoder):
            raise ConfigError(f"distill.switch_share={d.switch_share} switches the condition, but {d.teacher} is "
                              "unconditional (no labels, no prompts); set distill.switch_share=0")
        self.chunks = self.cfg.layout.clip_chunks(self.cfg.clip_frames)
        first = int(self.cfg.layout.first_frame_chunk)
        self.rollout = len(self.chunks) if d.rollout_chunks is None else max(d.rollout_chunks + first, len(self.chunks))
        self.guidance = self.teacher.sampler.cfg_scale if d.guidance is None else d.guidance
        self.settings = self.teacher.sampler.replace(steps=d.steps, cfg_scale=1.0, step_cache="none")
        self.times = timesteps(self.settings.steps, self.settings.shift)  # the student's, 1 down to 0
        self.prompts: list[str] | None = None  # a text teacher's: from its trajectories' index

    def check_resume(self, path: Path, config: DistillTrainingConfig) -> None:
        """The distillation's settings (its teacher, steps, schedule) cannot change on resume."""
        check_training_weights(path, "model_config")
        recorded = ckpt.read_metadata(path).get("distill_config")
        if recorded != dataclasses.asdict(config.distill):
            raise CheckpointError(f"checkpoint {path} was distilled with {recorded}, not "
                                  f"{dataclasses.asdict(config.distill)}; resume with the distill section it was "
                                  "started with")

    def dataset(self, config: DistillTrainingConfig) -> TrajectoryDataset:
        data = TrajectoryDataset(config.data.root)
        index = data.index
        same_times = len(index["times"]) == len(self.times) and all(
            math.isclose(a, b, abs_tol=1e-6) for a, b in zip(index["times"], self.times))
        self.prompts = index.get("prompts")
        if (self.text_encoder is None) != (self.prompts is None):
            raise DataError(f"the trajectories in {config.data.root} were recorded "
                            f"{'with' if self.prompts else 'without'} prompts, but {config.distill.teacher} "
                            f"{'is not' if self.prompts else 'is'} a text model: record them again with ca2vdm "
                            f"make-ode-pairs --checkpoint {config.distill.teacher}")
        if index["model_config"] != to_dict(self.cfg) or not same_times:
            raise DataError(f"the trajectories in {config.data.root} were recorded from {index['teacher']} for "
                            f"{index['steps']} student steps; distill.teacher={config.distill.teacher} with "
                            f"distill.steps={config.distill.steps} needs its own: ca2vdm make-ode-pairs "
                            f"--checkpoint {config.distill.teacher} --steps {config.distill.steps} --out NEW_DIR")
        return data

    def build_model(self, config: DistillTrainingConfig, resume: str | None) -> torch.nn.Module:
        """The student, initialised from the teacher (or from ``train.init_from``, e.g. an earlier student)."""
        student = build_model(self.cfg)
        init_from = config.train.init_from
        source = ckpt.load_model(init_from)[0] if init_from and not resume else self.teacher_model
        student.load_state_dict(source.state_dict())
        return student

    def parts(self, config: DistillTrainingConfig, resume: str | None) -> dict[str, Part]:
        """The critic (the fake score, initialised from the teacher) and the frozen teacher (the real score)."""
        critic = build_model(self.cfg)
        critic.load_state_dict(self.teacher_model.state_dict())
        return {"critic": Part(critic, config.distill.critic_lr), "teacher": Part(self.teacher_model)}

    def losses(self, models: dict[str, torch.nn.Module], batch: dict, config: DistillTrainingConfig,
               gen: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        d, device = config.distill, gen.device
        student, critic = models["model"], models["critic"]
        pipe = LongVideoPipeline(_unwrapped(student), self.settings, forward=student,
                                 pixel_space=self.teacher.pixel_space, text_encoder=self.text_encoder)
        condition = trajectory_condition(pipe, batch["label"], self.prompts)
        regression = lambda: trajectory_loss(student, batch["points"].to(device), self.times,  # noqa: E731
                                             condition.label, self.chunks, self.settings.cond_noise, gen,
                                             text=condition.prompt)
        if step < d.ode_steps:
            return {"model": regression()}
        train_student = generator_step(step, config)
        plan = rollout_plan(config.train.seed, step, self.rollout, len(self.chunks), d.steps, d.switch_share)
        seed = int(torch.randint(2**62, (), generator=gen, device=device))
        new = self.other_condition(pipe, condition, gen) if plan.switch_at is not None else None
        window = self_rollout(pipe, len(batch["label"]), condition, seed, plan, new, grad=train_student)
        scorer = lambda model, scale: LongVideoPipeline(  # noqa: E731
            _unwrapped(model), self.settings.replace(cfg_scale=scale), forward=model, text_encoder=self.text_encoder)
        critic_pipe, t_range = scorer(critic, 1.0), (d.min_t, d.max_t)
        losses = {}
        if train_student:
            real = partial(window_velocity, scorer(models["teacher"], self.guidance), window,
                           switch_mode=d.teacher_switch)
            losses["model"] = dmd_loss(window.clip, real, partial(window_velocity, critic_pipe, window), window.chunks,
                                       gen, t_range=t_range)
            if d.regression_weight:
                losses["model"] = losses["model"] + d.regression_weight * regression()
        drop = torch.rand(len(batch["label"]), generator=gen, device=device) < d.critic_dropout  # (B,)
        losses["critic"] = flow_loss(window.clip, partial(window_velocity, critic_pipe, window, drop=drop),
                                     window.chunks, gen, t_range=t_range)
        return losses

    def other_condition(self, pipe: LongVideoPipeline, condition: Condition, gen: torch.Generator) -> Condition:
        """What a switch changes to: for each video, a label or a prompt (of the trajectories' list) drawn
        uniformly."""
        count = len(self.prompts) if self.prompts else self.cfg.num_classes
        rows = torch.randint(count, condition.label.shape if condition.label is not None else (len(condition.prompt),),
                             generator=gen, device=gen.device)
        return trajectory_condition(pipe, rows.cpu(), self.prompts)

    def metadata(self, config: DistillTrainingConfig, step: int | None = None) -> CheckpointMetadata:
        """What the student's checkpoint records: the teacher's model and codec, its own sampler settings."""
        raw = {"distill_config": dataclasses.asdict(config.distill), "train_config": dataclasses.asdict(config.train),
               "teacher": config.distill.teacher}
        return CheckpointMetadata(self.cfg, self.settings, self.teacher.codec, class_names=self.teacher.class_names,
                                  step=step, raw=raw)

    def save_weights(self, directory: Path, ema: EMA, config: DistillTrainingConfig, step: int) -> None:
        ckpt.save_weights(directory / ckpt.WEIGHTS_NAME, ema.shadow, self.cfg, self.metadata(config, step).entries())

    def sample(self, ema: EMA, config: DistillTrainingConfig, out: Path, step: int, chunks: int = 8) -> None:
        """A short video of the EMA student, label 0 or the first prompt when it takes them (:func:`write_sample`)."""
        from ca2vdm.generation.api import Pipeline

        device = next(iter(ema.shadow.values())).device
        student = build_model(self.cfg).to(device)
        student.load_state_dict(ema.shadow)
        pipe = Pipeline.from_model(student.eval(), self.metadata(config), config.distill.teacher, device)
        label = 0 if self.cfg.num_classes else None
        prompt = self.prompts[0] if self.prompts else None
        write_sample((chunk.pixels[0] for chunk in pipe.generate(chunks, label=label, prompt=prompt, seed=0)), out,
                     step)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a distributed (DDP) wrapper, for its attributes; the wrapper's forward syncs gradients."""
    return getattr(model, "module", model)
