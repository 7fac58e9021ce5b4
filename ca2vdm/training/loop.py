"""Training loop: causal flow matching with accelerate, EMA, atomic checkpoints and exact resume.

Exact resume rests on three things: every random draw of a step (which chunk is noisy, noise, times, label
dropout) comes from a generator seeded by (seed, step, rank), not from a global RNG; the data order of an epoch is
a function of (seed, epoch); and optimizer, scheduler, EMA and the step counter are restored by accelerate's
``load_state``. Resuming at step k therefore replays exactly what an uninterrupted run does after step k. A
``train.lora`` run trains an adapter on the frozen ``train.init_from`` model through the same loop
(:mod:`ca2vdm.training.lora`).

Faults lose nothing: checkpoints are published atomically (:mod:`ca2vdm.training.run_files`,
:mod:`ca2vdm.training.checkpoint_dirs`), a run killed at any point (even SIGKILL while saving) resumes from its newest
complete checkpoint, and the metrics log is cut back to that step (a torn last line included), so the resumed run's
log and weights equal an uninterrupted run's. SIGTERM and SIGUSR1 stop a run after the current step, with a
checkpoint of that step (:mod:`ca2vdm.training.run_guard`).

One run per output directory: the main rank holds its :class:`~ca2vdm.training.run_lock.RunLock` for the whole run,
and a second run (fresh or resumed) is refused on every rank before it reads or writes anything. A resumed run keeps
the settings its checkpoint's state was built from (:data:`~ca2vdm.training.checkpoint_dirs.FIXED_ON_RESUME`, checked
before any work); other settings, ``train.max_steps`` included, apply from the resume step on, so ``config.yaml``
always records what governs the run.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ca2vdm.config import RunConfig, validate
from ca2vdm.errors import CheckpointError, DataError, NonFiniteLossError, opt
from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.training import checkpoint_dirs, run_files, sharded_state, trackers
from ca2vdm.training.diffusion_task import DiffusionTask
from ca2vdm.training.ema import EMA
from ca2vdm.training.parallelize import parallelize
from ca2vdm.training.run_guard import Preempted, RunGuard
from ca2vdm.training.task import Task, parts_of, step_losses


@dataclass
class Progress:
    """Step counter and data position, saved with the training state."""
    step: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def data_workers(setting: int, device: torch.device, processes: int) -> int:
    """``data.num_workers``, with -1 (auto) resolved: 0 when the model trains on the CPU, where decoding workers take
    the cores the model needs (2 cores, real 1280x720 / 640x272 videos: 0.53 steps/s without workers, 0.49 with one,
    0.51 with two; docs/benchmarks.md); otherwise one fewer than this process's share of the cores, at most 8."""
    if setting >= 0:
        return setting
    if device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) // processes - 1))


def _mixed_precision(setting: str) -> str:
    """``train.mixed_precision`` (auto | fp32 | bf16 | fp16; ``no`` as fp32) as accelerate spells it."""
    if setting == "auto":
        setting = "bf16" if torch.cuda.is_available() else "fp32"
    return "no" if setting in ("fp32", "no") else setting


def train(config: RunConfig, resume: str | None = None, progress_bar: bool = True,
          task_type: Callable[[RunConfig, torch.device], Task] = DiffusionTask) -> Path:
    """Train ``config``; returns the output directory. ``resume``: None, 'latest' or a checkpoint directory.
    ``task_type(config, device)`` makes the :class:`~ca2vdm.training.task.Task`: what is trained (default: the
    video DiT).

    Raises :class:`~ca2vdm.errors.RunLockedError` (on every rank) if another run is using ``train.output_dir``, and
    :class:`~ca2vdm.training.run_guard.Preempted` after a stop signal, once the step's checkpoint is saved.
    """
    validate(config)  # a Config built in code gets the same checks as one from load_config
    # cpu=True on a machine without CUDA makes a multi-process launch a gloo process group (MULTI_CPU). The schedule
    # counts optimizer steps (accelerate's default would step it once per process, N times as fast on N processes).
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False,
                              mixed_precision=_mixed_precision(config.train.mixed_precision),
                              gradient_accumulation_steps=config.train.grad_accum,
                              **trackers.accelerator_kwargs(config))
    with RunGuard(accelerator, config.train.output_dir) as guard:
        return _train(config, resume, progress_bar, accelerator, task_type, guard)


def _train(config: RunConfig, resume: str | None, progress_bar: bool, accelerator: Accelerator,
           task_type: Callable[[RunConfig, torch.device], Task], guard: RunGuard) -> Path:
    tc = config.train
    task = task_type(config, accelerator.device)
    if tc.lora is not None:  # an adapter on train.init_from; peft (2.5 s to import) loads only for such runs
        from ca2vdm.training.lora import LoraTask, keep_adapter_only

        task = LoraTask(task)
    out = Path(tc.output_dir)
    ckpt_root = out / "checkpoints"
    resume_path = None
    if resume:  # bad --resume and a changed model or optimizer config are reported before any work starts
        resume_path = checkpoint_dirs.resolve_resume(resume, ckpt_root)
        checkpoint_dirs.check_resumable(resume_path, tc)
        task.check_resume(resume_path, config)
    elif checkpoint_dirs.step_dirs(ckpt_root):  # a fresh start would wipe metrics.jsonl and overwrite those checkpoints
        held = ", ".join(p.name for p in checkpoint_dirs.step_dirs(ckpt_root))
        raise CheckpointError(f"train.output_dir {out} already holds checkpoints ({held}); pass "
                              f"{opt('resume', 'latest')} to continue that run, or choose a new train.output_dir")
    set_seed(tc.seed)

    dataset = task.dataset(config)
    sampler = DistributedSampler(dataset, num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                                 shuffle=True, seed=tc.seed, drop_last=True)
    workers = data_workers(config.data.num_workers, accelerator.device, accelerator.num_processes)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                        pin_memory=torch.cuda.is_available())
    if len(loader) == 0:
        raise DataError(f"{len(dataset)} usable clips in {config.data.root} give no full batch of train.batch_size="
                        f"{tc.batch_size} on {accelerator.num_processes} process(es); lower train.batch_size, raise "
                        "data.clips_per_video or add videos")

    parts = parts_of(task, config, resume)  # "model" first: the one the EMA follows and checkpoints publish
    frozen = {name: _frozen(part.module, config, accelerator.device) for name, part in parts.items() if part.lr is None}
    trained = {name: parallelize(part.module, config, accelerator.device) for name, part in parts.items()
               if part.lr is not None}
    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=parts[n].lr,  # a LoRA
                                    weight_decay=tc.weight_decay) for n, m in trained.items()]  # run: its adapter
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: _lr_factor(s, tc.warmup_steps, tc.max_steps))
                  for o in optimizers]
    models, optimizers, schedulers, sharded = sharded_state.prepare(accelerator, list(trained.values()), optimizers,
                                                                    schedulers, trained_only=tc.lora is not None)
    trained = dict(zip(trained, models))
    optimizer_of, schedule_of = dict(zip(trained, optimizers)), dict(zip(trained, schedulers))
    model = trained["model"]
    ema = EMA(accelerator.unwrap_model(model), tc.ema_decay, trained_only=tc.lora is not None)  # on the device
    if tc.lora is not None:
        keep_adapter_only(accelerator)  # the resume state holds the adapter; the base comes from train.init_from
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)

    if resume_path is not None:
        try:
            accelerator.load_state(str(resume_path))
            if sharded is not None:  # model and optimizer of a sharded run: full files, cut into this rank's shards
                sharded.load(resume_path)
        except Exception as e:  # damaged optimizer/scheduler/RNG files: name the directory, not a pickle frame
            raise CheckpointError(f"checkpoint {resume_path} cannot be resumed: {type(e).__name__}: {e}; "
                                       f"pass an earlier checkpoint directory as {opt('resume')}") from e
        accelerator.print(f"resumed from {resume_path} at step {progress.step}")
    epoch, offset = divmod(progress.step * tc.grad_accum, len(loader))
    sampler.set_epoch(epoch)
    device = "cpu" if accelerator.device.type == "cpu" else accelerator.device  # accelerate: cpu:0 on every rank
    print(f"rank {accelerator.process_index} of world size {accelerator.num_processes} on {device}: {len(sampler)} of "
          f"{len(dataset)} clips per epoch, epoch {epoch}{f' (resuming at batch {offset})' if offset else ''} starts "
          f"with {list(sampler)[:8]}", flush=True)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(config)))
        run_files.truncate_log(out / "metrics.jsonl", progress.step)
        trackers.start(accelerator, config)
        run_files.report_skipped(dataset.skipped, out / run_files.SKIPPED_LOG, accelerator,
                                 len(dataset.skipped) + len(dataset.videos))
    skipped_at_start = len(dataset.skipped)

    bar = tqdm(total=tc.max_steps, initial=progress.step, disable=not (progress_bar and accelerator.is_main_process),
               desc="train", dynamic_ncols=True)
    for module in models:
        module.train()
    tic, stop = time.perf_counter(), 0
    while progress.step < tc.max_steps and not stop:
        micro = progress.step * tc.grad_accum
        epoch, offset = divmod(micro, len(loader))
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in skip_first_batches(loader, offset) if offset else loader:
            gen = torch.Generator(device=accelerator.device).manual_seed(
                _step_seed(tc.seed, progress.step, micro % tc.grad_accum, accelerator.process_index))
            with accelerator.accumulate(*models):
                with accelerator.autocast():
                    losses = step_losses(task, {**trained, **frozen}, batch, config, gen, progress.step)
                loss = sum(losses.values())  # each loss reaches only its own part's parameters
                if not torch.isfinite(loss):
                    if tc.nonfinite == "stop":
                        raise NonFiniteLossError(f"loss is {loss.item()} at step {progress.step}; "
                                                 + run_files.after_nonfinite(ckpt_root))
                    accelerator.print(f"step {progress.step}: non-finite loss, batch skipped")
                else:
                    accelerator.backward(loss)
                    for name in losses:  # the parts this step trains; the others keep their weights
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(trained[name].parameters(), 1.0)
                        optimizer_of[name].step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                        for name, schedule in schedule_of.items():  # a part's schedule follows the training
                            if optimizer_of[name].state:  # step from its first update on (restored with its optimizer)
                                schedule.step()
                for each in optimizers:
                    each.zero_grad(set_to_none=True)
            micro += 1
            if not accelerator.sync_gradients:
                continue
            ema.update(accelerator.unwrap_model(model), progress.step)
            progress.step += 1
            means, stop = guard.agree(torch.stack([loss, *losses.values()]) if len(trained) > 1 else loss)
            loss_value = means[0]  # stop: a signal any rank received, all ranks stop here
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if progress.step % tc.log_every == 0 and accelerator.is_main_process:
                per_part = {f"loss_{name}": value for name, value in zip(losses, means[1:])}
                values = dict(loss=loss_value, **per_part, lr=schedule_of["model"].get_last_lr()[0],
                              steps_per_s=tc.log_every / (time.perf_counter() - tic))
                run_files.log_metrics(out / "metrics.jsonl", step=progress.step, **values)
                accelerator.log(values, step=progress.step)  # train.log_with's trackers
                tic = time.perf_counter()
            if stop or progress.step % tc.save_every == 0 or progress.step == tc.max_steps:
                saved = run_files.save_checkpoint(accelerator, ema, config, ckpt_root, progress.step, task, sharded)
            if tc.sample_every and progress.step % tc.sample_every == 0 and not stop:
                published = ema.gathered()  # every rank takes part when the EMA is sharded
                if accelerator.is_main_process:  # skipped on a stop: the grace period goes to the save
                    task.sample(published, config, out, progress.step)
            if stop or progress.step >= tc.max_steps:
                break
    bar.close()
    if accelerator.is_main_process and len(dataset.skipped) > skipped_at_start:  # decode failures while training
        run_files.report_skipped(dataset.skipped[skipped_at_start:], out / run_files.SKIPPED_LOG, accelerator,
                                 None)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if stop and progress.step < tc.max_steps:
        raise Preempted(stop, progress.step, saved)
    return out


def _frozen(module: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.nn.Module:
    """A task's frozen part (a teacher): no gradients, eval mode, on the device, sharded like the trained ones."""
    module.requires_grad_(False).eval()
    return parallelize(module.to(device), config, device) if config.train.fsdp else module.to(device)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of one micro-batch's generator, below 2**64 (what torch takes) for every ``train.seed``."""
    return (((seed * 1_000_003 + step) * 131 + micro) * 1009 + rank) % 2 ** 64
