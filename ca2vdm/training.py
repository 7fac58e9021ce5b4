"""Training loop: causal flow matching with accelerate, EMA, atomic checkpoints and exact resume.

Exact resume rests on three things: every random draw of a step (which chunk is noisy, noise, times, label
dropout) comes from a generator seeded by (seed, step, rank), not from a global RNG; the data order of an epoch is
a function of (seed, epoch); and optimizer, scheduler, EMA and the step counter are restored by accelerate's
``load_state``. Resuming at step k therefore replays exactly what an uninterrupted run does after step k.

Faults lose nothing: checkpoints are published atomically (see :mod:`ca2vdm.checkpoint`), a run killed at any
point (even SIGKILL while saving) resumes from its newest complete checkpoint, and the metrics log is cut back to
that step (a torn last line included), so the resumed run's log and weights equal an uninterrupted run's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config, validate
from .data import DataError, VideoFolderDataset
from .diffusion import causal_flow_loss
from .model import CausalVideoDiT


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite and ``train.nonfinite`` is ``stop``."""


class EMA:
    """Exponential moving average of a model's parameters (saved and restored through accelerate).

    The decay warms up as min(decay, (1 + step) / (10 + step)) so that short runs are not dominated by the
    (zero-initialised) starting weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            self.shadow[k].lerp_(v.float(), 1 - decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


@dataclass
class Progress:
    """Step counter and data position, saved with the training state."""
    step: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def chunk_layout(model_cfg) -> list[tuple[int, int]]:
    """(first frame, length) of every chunk of a training clip."""
    chunks, start = [], 0
    if model_cfg.first_frame_chunk:
        chunks.append((0, 1))
        start = 1
    while start < model_cfg.clip_frames:
        chunks.append((start, model_cfg.chunk_frames))
        start += model_cfg.chunk_frames
    return chunks


def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return setting


def train(config: Config, resume: str | None = None, progress_bar: bool = True) -> Path:
    """Train ``config``; returns the output directory. ``resume``: None, 'latest' or a checkpoint directory."""
    tc, mc = config.train, config.model
    validate(config)  # a Config built in code gets the same checks as one from load_config
    out = Path(tc.output_dir)
    ckpt_root = out / "checkpoints"
    resume_path = None
    if resume:  # bad --resume and a changed model config are reported before any work starts
        resume_path = ckpt.resolve_resume(resume, ckpt_root)
        ckpt.check_compatible(resume_path, mc)
    elif ckpt.step_dirs(ckpt_root):  # a fresh start would wipe metrics.jsonl and overwrite those checkpoints
        raise ckpt.CheckpointError(f"train.output_dir {out} already holds checkpoints "
                                   f"({', '.join(p.name for p in ckpt.step_dirs(ckpt_root))}); pass --resume latest "
                                   "to continue that run, or choose a new train.output_dir")
    # cpu=True on a machine without CUDA makes a multi-process launch a gloo process group (MULTI_CPU).
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_mixed_precision(tc.mixed_precision),
                              gradient_accumulation_steps=tc.grad_accum)
    set_seed(tc.seed)

    dataset = VideoFolderDataset(config.data.root, num_frames=mc.clip_frames, frame_stride=config.data.frame_stride,
                                 resolution=mc.resolution, manifest=config.data.manifest, seed=tc.seed,
                                 clips_per_video=config.data.clips_per_video)
    if mc.num_classes and dataset.num_classes > mc.num_classes:
        raise DataError(f"the labels in {config.data.root} go up to {dataset.num_classes - 1} but model.num_classes="
                        f"{mc.num_classes}; raise model.num_classes")
    sampler = DistributedSampler(dataset, num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                                 shuffle=True, seed=tc.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, drop_last=True,
                        num_workers=config.data.num_workers, pin_memory=torch.cuda.is_available())
    if len(loader) == 0:
        raise DataError(f"{len(dataset)} usable clips in {config.data.root} give no full batch of train.batch_size="
                        f"{tc.batch_size} on {accelerator.num_processes} process(es); lower train.batch_size, raise "
                        "data.clips_per_video or add videos")

    sampler.set_epoch(0)
    print(f"rank {accelerator.process_index} of world size {accelerator.num_processes} on {accelerator.device}: "
          f"{len(sampler)} of {len(dataset)} clips per epoch, epoch 0 starts with {list(sampler)[:8]}", flush=True)
    model = CausalVideoDiT(mc)
    if tc.init_from and not resume:
        try:
            model.load_state_dict(ckpt.load_model(tc.init_from)[0].state_dict())
        except RuntimeError as e:  # tensors of another shape or set: the checkpoint is fine, the pairing is not
            raise ckpt.CheckpointError(f"train.init_from={tc.init_from} does not fit this model config "
                                       f"({str(e).strip().splitlines()[-1].strip()}); use the model config it was "
                                       "trained with (its sizes, depth and num_classes)") from None
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, tc.warmup_steps, tc.max_steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = EMA(accelerator.unwrap_model(model), tc.ema_decay)  # on the training device
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)

    if resume_path is not None:
        try:
            accelerator.load_state(str(resume_path))
        except Exception as e:  # damaged optimizer/scheduler/RNG files: name the directory, not a pickle frame
            raise ckpt.CheckpointError(f"checkpoint {resume_path} cannot be resumed: {type(e).__name__}: {e}; "
                                       "pass an earlier checkpoint directory with --resume") from e
        accelerator.print(f"resumed from {resume_path} at step {progress.step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(config)))
        _truncate_log(out / "metrics.jsonl", progress.step)
        _report_skipped(dataset.skipped, out / SKIPPED_LOG, accelerator, len(dataset.skipped) + len(dataset.videos))
    skipped_at_start = len(dataset.skipped)

    chunks = chunk_layout(mc)
    bar = tqdm(total=tc.max_steps, initial=progress.step, disable=not (progress_bar and accelerator.is_main_process),
               desc="train", dynamic_ncols=True)
    model.train()
    tic = time.perf_counter()
    while progress.step < tc.max_steps:
        micro = progress.step * tc.grad_accum
        epoch, offset = divmod(micro, len(loader))
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for batch in skip_first_batches(loader, offset) if offset else loader:
            gen = torch.Generator(device=accelerator.device).manual_seed(
                _step_seed(tc.seed, progress.step, micro % tc.grad_accum, accelerator.process_index))
            with accelerator.accumulate(model):
                loss = _loss(model, batch, chunks, config, accelerator, gen)
                if not torch.isfinite(loss):
                    if tc.nonfinite == "stop":
                        raise NonFiniteLossError(
                            f"loss is {loss.item()} at step {progress.step}; training stopped, the last good "
                            f"checkpoint is kept under {ckpt_root}. Lower train.lr, or set train.nonfinite=skip")
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.print(f"step {progress.step}: non-finite loss, batch skipped")
                else:
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            micro += 1
            if not accelerator.sync_gradients:
                continue
            ema.update(accelerator.unwrap_model(model), progress.step)
            progress.step += 1
            loss_value = accelerator.reduce(loss.detach(), "mean").item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if progress.step % tc.log_every == 0 and accelerator.is_main_process:
                _log(out / "metrics.jsonl", step=progress.step, loss=loss_value, lr=scheduler.get_last_lr()[0],
                     steps_per_s=tc.log_every / (time.perf_counter() - tic))
                tic = time.perf_counter()
            if progress.step % tc.save_every == 0 or progress.step == tc.max_steps:
                save_checkpoint(accelerator, ema, config, ckpt_root, progress.step)
            if tc.sample_every and progress.step % tc.sample_every == 0 and accelerator.is_main_process:
                _sample_video(ema, mc, config, out / "samples" / f"step_{progress.step:06d}.mp4")
            if progress.step >= tc.max_steps:
                break
    bar.close()
    if accelerator.is_main_process and len(dataset.skipped) > skipped_at_start:  # decode failures while training
        _report_skipped(dataset.skipped[skipped_at_start:], out / SKIPPED_LOG, accelerator, None)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


SKIPPED_LOG = "skipped_videos.jsonl"


def _report_skipped(skipped: list[tuple[str, str]], path: Path, accelerator: Accelerator, total: int | None) -> None:
    """Print one line about unusable video files and list them all in ``path`` (rewritten at start, appended to
    for files that fail while training)."""
    if total is not None:
        path.unlink(missing_ok=True)
    if not skipped:
        return
    with open(path, "a") as f:
        for file, reason in skipped:
            f.write(json.dumps({"file": file, "reason": reason}) + "\n")
    first = "; ".join(f"{file}: {reason}" for file, reason in skipped[:3])
    what = f"skipped {len(skipped)} of {total} video files" if total is not None else \
        f"{len(skipped)} video files failed to decode while training and were replaced by the next video"
    accelerator.print(f"data: {what} (all listed in {path}): {first}", flush=True)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 131 + micro) * 1009 + rank


def _loss(model, batch, chunks, config: Config, accelerator: Accelerator, gen: torch.Generator) -> torch.Tensor:
    mc = config.model
    video = batch["video"].to(accelerator.device)  # (B, C, T, H, W)
    labels = None
    if mc.num_classes:
        labels = batch["label"].to(accelerator.device)
        drop = torch.rand(labels.shape, generator=gen, device=labels.device) < config.diffusion.label_dropout
        labels = torch.where(drop, mc.num_classes, labels)
    start, length = chunks[int(torch.randint(len(chunks), (1,), generator=gen, device=gen.device))]
    with accelerator.autocast():
        return causal_flow_loss(model, video, labels, start, length, config.diffusion.cond_noise, generator=gen)


def save_checkpoint(accelerator: Accelerator, ema: EMA, config: Config, root: Path, step: int) -> Path:
    """Full training state + EMA weights into ``root/step_<step>``, atomically; prune old ones."""
    final = root / f"step_{step:06d}"
    staging = ckpt.staging_dir(final)
    try:
        if accelerator.is_main_process:
            ckpt.discard(staging)  # left over by a run killed while saving
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))  # every rank writes its RNG state, the main rank the rest
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt.save_weights(staging / ckpt.WEIGHTS_NAME, ema.shadow, config.model,
                              {"step": step, "diffusion_config": dataclasses.asdict(config.diffusion)})
            ckpt.publish(staging, final)
    except Exception as e:
        ckpt.discard(staging)
        previous = ckpt.step_dirs(root)
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise ckpt.CheckpointWriteError(f"could not write checkpoint {final}: {type(e).__name__}: {e}; {kept}. "
                                        "Free disk space or fix permissions, then rerun with --resume latest") from e
    if accelerator.is_main_process:
        ckpt.prune(root, config.train.keep_last)
    accelerator.wait_for_everyone()
    return final


def _log(path: Path, **values) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(values) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a killed run may have logged beyond its checkpoint, and a kill during a
    write leaves a torn last line); rewritten atomically so a second kill loses nothing."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # torn line
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    _write_atomic(path, "".join(line + "\n" for line in kept))


def _sample_video(ema: EMA, model_cfg, config: Config, path: Path, chunks: int = 4) -> None:
    from .pipeline import LongVideoPipeline
    from .video_io import VideoWriter, to_uint8

    model = CausalVideoDiT(model_cfg)
    model.load_state_dict(ema.shadow)
    pipe = LongVideoPipeline(model, steps=config.diffusion.steps, shift=config.diffusion.shift,
                             cond_noise=config.diffusion.cond_noise)
    label = 0 if model_cfg.num_classes else None
    with VideoWriter(path, fps=8) as writer:
        for chunk in pipe.generate(chunks, label=label, seed=0):
            writer.write(to_uint8(chunk.frames[0]))
