"""Training loop: causal flow matching with accelerate, EMA, atomic checkpoints and exact resume.

Exact resume rests on three things: every random draw of a step (which chunk is noisy, noise, times, label
dropout) comes from a generator seeded by (seed, step, rank), not from a global RNG; the data order of an epoch is
a function of (seed, epoch); and optimizer, scheduler, EMA and the step counter are restored by accelerate's
``load_state``. Resuming at step k therefore replays exactly what an uninterrupted run does after step k.

Faults lose nothing: checkpoints are published atomically (see :mod:`ca2vdm.checkpoint`), a run killed at any
point (even SIGKILL while saving) resumes from its newest complete checkpoint, and the metrics log is cut back to
that step (a torn last line included), so the resumed run's log and weights equal an uninterrupted run's.

One run per output directory: the main rank holds its :class:`~ca2vdm.checkpoint.RunLock` for the whole run, and a
second run (fresh or resumed) is refused on every rank before it reads or writes anything. A resumed run keeps the
settings its checkpoint's state was built from (:data:`~ca2vdm.checkpoint.FIXED_ON_RESUME`, checked before any
work); other settings, ``train.max_steps`` included, apply from the resume step on, so ``config.yaml`` always records
what governs the run.
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
from accelerate.utils import broadcast_object_list, set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import checkpoint as ckpt
from . import sharded_state, trackers
from .codec import build_codec, check_model_fits
from .config import Config, validate
from .data import DEFAULT_MANIFEST, DataError, VideoFolderDataset
from .diffusion import causal_flow_loss, teacher_forcing_flow_loss
from .ema import EMA
from .latents import LatentClipDataset
from .model import CausalVideoDiT
from .parallelize import parallelize
from .pipeline import LongVideoPipeline
from .rollout import rollout_context


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite and ``train.nonfinite`` is ``stop``."""


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


def chunk_weights(chunks: list[tuple[int, int]], contiguous: torch.Tensor, model_cfg) -> torch.Tensor:
    """(B, K) 0/1 for a model with sinks: which chunk k of which clip b carries loss. A chunk whose context does not
    fill the KV cache's window is, at inference, one of a video's first chunks, right after the sinks: it is trained
    only on clips that show that (``contiguous``, ``ca2vdm.data.CONTIGUOUS_SHARE``), never after a gap the positions
    cannot show (the model would learn the blurred average over every distance). This includes the first-frame
    chunk, which would be valid in any clip: it keeps half of its samples."""
    full = torch.tensor([start >= model_cfg.max_context_frames for start, _ in chunks], device=contiguous.device)
    return (contiguous.bool()[:, None] | full[None]).float()  # (B, K)


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
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return setting


class DiffusionTask:
    """What :func:`train` trains by default: the causal video DiT on clips that cross into the model's space through
    the codec (``codec`` section), or on latents encoded once (``data.latents``). A task supplies the data, the
    model, the loss, the published weights and the periodic samples; the loop, checkpoints and resume are shared
    (``ca2vdm.autoencoder.AutoencoderTask`` trains our own autoencoder with the same loop)."""

    def __init__(self, config: Config, device: torch.device):
        self.codec = build_codec(config.codec, device)
        check_model_fits(self.codec, config.model.in_channels)
        self.chunks = chunk_layout(config.model)

    def check_resume(self, path: Path, config: Config) -> None:
        """The model config and the codec (the space the weights work in) cannot change on resume."""
        ckpt.check_compatible(path, config.model)
        recorded = ckpt.read_metadata(path).get("codec", {"kind": "pixel"})
        current = self.codec.metadata()
        if any(recorded.get(k) != current.get(k) for k in ("kind", "path", "scaling_factor", "shift_factor")):
            raise ckpt.CheckpointError(f"checkpoint {path} was trained with codec {recorded}, the config's codec is "
                                       f"{current}; resume with the codec it was trained with")

    def dataset(self, config: Config) -> VideoFolderDataset | LatentClipDataset:
        mc, dc, seed = config.model, config.data, config.train.seed
        if dc.latents:
            dataset = LatentClipDataset(dc.latents, mc.clip_frames, dc.frame_stride, seed, dc.clips_per_video,
                                        mc.sink_frames)
            dataset.check_fits(mc.in_channels, mc.resolution, self.codec.metadata())
        else:  # frames are decoded at the codec's pixel size and encoded on the training device
            dataset = VideoFolderDataset(dc.root, num_frames=mc.clip_frames, frame_stride=dc.frame_stride,
                                         resolution=mc.resolution * self.codec.factor, manifest=dc.manifest, seed=seed,
                                         clips_per_video=dc.clips_per_video, report_skipped=False,
                                         sink_frames=mc.sink_frames)
        where = dc.latents or dc.root
        if mc.num_classes and dataset.manifest is None:
            raise DataError(f"model.num_classes={mc.num_classes} but {where} has no labels manifest "
                            f"({DEFAULT_MANIFEST}, or data.manifest), so every video would get label 0; add one "
                            '(lines {"file": "relative/path.mp4", "label": 0}), or set model.num_classes=0 to train '
                            "unconditionally")
        if mc.num_classes and dataset.num_classes > mc.num_classes:
            raise DataError(f"the labels in {where} go up to {dataset.num_classes - 1} but model.num_classes="
                            f"{mc.num_classes}; raise model.num_classes")
        return dataset

    def build_model(self, config: Config, resume: str | None) -> torch.nn.Module:
        model = CausalVideoDiT(config.model)
        init_from = config.train.init_from
        if init_from and not resume:
            try:
                model.load_state_dict(ckpt.load_model(init_from)[0].state_dict())
            except RuntimeError as e:  # tensors of another shape or set: the checkpoint is fine, the pairing is not
                raise ckpt.CheckpointError(f"train.init_from={init_from} does not fit this model config "
                                           f"({str(e).strip().splitlines()[-1].strip()}); use the model config it "
                                           "was trained with (its sizes, depth and num_classes)") from None
        return model

    def loss(self, model, batch: dict, config: Config, gen: torch.Generator) -> torch.Tensor:
        """``diffusion.objective``: ``all`` trains every chunk of the clip (teacher forcing), ``chunk`` one chunk
        drawn at random; the same expected objective (mean over chunks), ``all`` with every chunk's signal per step.
        With ``diffusion.self_rollout`` a share of the steps is conditioned on the model's own samples."""
        mc = config.model
        video = batch["video"].to(gen.device)  # (B, C, T, H, W): pixels, or latents with data.latents
        if not config.data.latents:
            video = self.codec.encode(video)
        labels = None
        if mc.num_classes:
            labels = batch["label"].to(gen.device)
            drop = torch.rand(labels.shape, generator=gen, device=labels.device) < config.diffusion.label_dropout
            labels = torch.where(drop, mc.num_classes, labels)
        dc = config.diffusion
        weight = chunk_weights(self.chunks, batch["contiguous"].to(gen.device), mc) if mc.sink_frames else None
        if dc.objective == "all":
            context = self.own_context(model, video, labels, self.chunks[-1][0], config, gen)
            return teacher_forcing_flow_loss(model, video, labels, self.chunks, dc.cond_noise, generator=gen,
                                             context=context, weight=weight)
        k = int(torch.randint(len(self.chunks), (1,), generator=gen, device=gen.device))
        start, length = self.chunks[k]
        context = self.own_context(model, video, labels, start, config, gen)
        return causal_flow_loss(model, video, labels, start, length, dc.cond_noise, generator=gen, context=context,
                                weight=None if weight is None else weight[:, k])

    def own_context(self, model, video: torch.Tensor, labels: torch.Tensor | None, num_cond: int, config: Config,
                    gen: torch.Generator) -> torch.Tensor | None:
        """For a share ``diffusion.self_rollout`` of the steps, the clip with its first ``num_cond`` frames (after
        the given ones) made by the model itself (:mod:`ca2vdm.rollout`); otherwise None (real context). Draws
        nothing from ``gen`` when self-rollout is off, so such runs are unchanged."""
        dc = config.diffusion
        if not dc.self_rollout or torch.rand((), generator=gen, device=gen.device) >= dc.self_rollout:
            return None
        seed = int(torch.randint(2**62, (), generator=gen, device=gen.device))
        return rollout_context(getattr(model, "module", model), video, labels, num_cond, start_t=dc.rollout_t,
                               steps=dc.rollout_steps, shift=dc.shift, cond_noise=dc.cond_noise, seed=seed,
                               pixel_space=self.codec.pixel_space)

    def save_weights(self, directory: Path, ema: EMA, config: Config, step: int) -> None:
        ckpt.save_weights(directory / ckpt.WEIGHTS_NAME, ema.shadow, config.model,
                          {"step": step, "diffusion_config": dataclasses.asdict(config.diffusion),
                           "train_config": dataclasses.asdict(config.train), "codec": self.codec.metadata()})

    def sample(self, ema: EMA, config: Config, out: Path, step: int, chunks: int = 4) -> None:
        """A short video from the EMA weights, decoded through the codec, into ``out/samples/step_N.mp4``."""
        from .video_io import VideoWriter, to_uint8

        model = CausalVideoDiT(config.model).to(next(iter(ema.shadow.values())).device)
        model.load_state_dict(ema.shadow)
        pipe = LongVideoPipeline(model, steps=config.diffusion.steps, shift=config.diffusion.shift,
                                 cond_noise=config.diffusion.cond_noise, pixel_space=self.codec.pixel_space)
        label = 0 if config.model.num_classes else None
        with VideoWriter(out / "samples" / f"step_{step:06d}.mp4", fps=8) as writer:
            for chunk in pipe.generate(chunks, label=label, seed=0):
                writer.write(to_uint8(self.codec.decode(chunk.frames)[0]))


def train(config: Config, resume: str | None = None, progress_bar: bool = True, task_type=DiffusionTask) -> Path:
    """Train ``config``; returns the output directory. ``resume``: None, 'latest' or a checkpoint directory.
    ``task_type(config, device)`` says what is trained (default: the video DiT).

    Raises :class:`~ca2vdm.checkpoint.RunLockedError` (on every rank) if another run is using ``train.output_dir``.
    """
    validate(config)  # a Config built in code gets the same checks as one from load_config
    # cpu=True on a machine without CUDA makes a multi-process launch a gloo process group (MULTI_CPU). The schedule
    # counts optimizer steps (accelerate's default would step it once per process, N times as fast on N processes).
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False,
                              mixed_precision=_mixed_precision(config.train.mixed_precision),
                              gradient_accumulation_steps=config.train.grad_accum,
                              **trackers.accelerator_kwargs(config))
    lock = ckpt.RunLock(config.train.output_dir)
    _lock_on_all_ranks(accelerator, lock)
    try:
        return _train(config, resume, progress_bar, accelerator, task_type)
    finally:
        lock.release()


def _lock_on_all_ranks(accelerator: Accelerator, lock: ckpt.RunLock) -> None:
    """The main rank takes ``lock``; every rank raises its error, so a multi-process launch fails as a whole (no rank
    is left waiting for the others)."""
    error = None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except Exception as e:  # whatever it is, the other ranks must stop too
            error = e
    [error] = broadcast_object_list([error])
    if error is not None:
        raise error


def _train(config: Config, resume: str | None, progress_bar: bool, accelerator: Accelerator, task_type) -> Path:
    tc = config.train
    task = task_type(config, accelerator.device)
    out = Path(tc.output_dir)
    ckpt_root = out / "checkpoints"
    resume_path = None
    if resume:  # bad --resume and a changed model or optimizer config are reported before any work starts
        resume_path = ckpt.resolve_resume(resume, ckpt_root)
        task.check_resume(resume_path, config)
        ckpt.check_resumable(resume_path, tc)
    elif ckpt.step_dirs(ckpt_root):  # a fresh start would wipe metrics.jsonl and overwrite those checkpoints
        raise ckpt.CheckpointError(f"train.output_dir {out} already holds checkpoints "
                                   f"({', '.join(p.name for p in ckpt.step_dirs(ckpt_root))}); pass --resume latest "
                                   "to continue that run, or choose a new train.output_dir")
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

    sampler.set_epoch(0)
    print(f"rank {accelerator.process_index} of world size {accelerator.num_processes} on {accelerator.device}: "
          f"{len(sampler)} of {len(dataset)} clips per epoch, epoch 0 starts with {list(sampler)[:8]}", flush=True)
    model = parallelize(task.build_model(config, resume), config, accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, tc.warmup_steps, tc.max_steps))
    model, optimizer, scheduler, sharded = sharded_state.prepare(accelerator, model, optimizer, scheduler)
    ema = EMA(accelerator.unwrap_model(model), tc.ema_decay)  # on the training device
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)

    if resume_path is not None:
        try:
            accelerator.load_state(str(resume_path))
            if sharded is not None:  # model and optimizer of a sharded run: full files, cut into this rank's shards
                sharded.load(resume_path)
        except Exception as e:  # damaged optimizer/scheduler/RNG files: name the directory, not a pickle frame
            raise ckpt.CheckpointError(f"checkpoint {resume_path} cannot be resumed: {type(e).__name__}: {e}; "
                                       "pass an earlier checkpoint directory with --resume") from e
        accelerator.print(f"resumed from {resume_path} at step {progress.step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(config)))
        _truncate_log(out / "metrics.jsonl", progress.step)
        trackers.start(accelerator, config)
        _report_skipped(dataset.skipped, out / SKIPPED_LOG, accelerator, len(dataset.skipped) + len(dataset.videos))
    skipped_at_start = len(dataset.skipped)

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
                with accelerator.autocast():
                    loss = task.loss(model, batch, config, gen)
                if not torch.isfinite(loss):
                    if tc.nonfinite == "stop":
                        raise NonFiniteLossError(f"loss is {loss.item()} at step {progress.step}; "
                                                 + _after_nonfinite(ckpt_root))
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.print(f"step {progress.step}: non-finite loss, batch skipped")
                else:
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
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
                values = dict(loss=loss_value, lr=scheduler.get_last_lr()[0],
                              steps_per_s=tc.log_every / (time.perf_counter() - tic))
                _log(out / "metrics.jsonl", step=progress.step, **values)
                accelerator.log(values, step=progress.step)  # train.log_with's trackers
                tic = time.perf_counter()
            if progress.step % tc.save_every == 0 or progress.step == tc.max_steps:
                save_checkpoint(accelerator, ema, config, ckpt_root, progress.step, task, sharded)
            if tc.sample_every and progress.step % tc.sample_every == 0:
                published = ema.gathered()  # every rank takes part when the EMA is sharded
                if accelerator.is_main_process:
                    task.sample(published, config, out, progress.step)
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


def _after_nonfinite(root: Path) -> str:
    """What a run stopped by a non-finite loss keeps, and what to do next."""
    previous = ckpt.step_dirs(root)
    if previous:
        return (f"training stopped, the last good checkpoint {previous[-1]} is kept. Lower train.lr, or set "
                "train.nonfinite=skip")
    return (f"training stopped before its first checkpoint, so no checkpoint was written under {root}. Lower "
            "train.lr (or set train.nonfinite=skip) and start again without --resume")


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return ((seed * 1_000_003 + step) * 131 + micro) * 1009 + rank


def save_checkpoint(accelerator: Accelerator, ema: EMA, config: Config, root: Path, step: int, task,
                    sharded: sharded_state.ShardedState | None = None) -> Path:
    """Full training state + the task's published weights into ``root/step_<step>``, atomically; prune old ones.
    ``sharded``: the model and optimizer of an FSDP run, gathered into the same files an unsharded run writes."""
    final = root / f"step_{step:06d}"
    staging = ckpt.staging_dir(final)
    try:
        if accelerator.is_main_process:
            ckpt.discard(staging)  # left over by a run killed while saving
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))  # every rank writes its RNG state, the main rank the rest
        if sharded is not None:
            sharded.save(staging, accelerator.is_main_process)
        published = ema.gathered()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            task.save_weights(staging, published, config, step)
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
