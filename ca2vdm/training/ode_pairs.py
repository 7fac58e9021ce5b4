"""Recording a teacher's trajectories for a few-step student's ODE regression (``ca2vdm make-ode-pairs``).

The teacher samples clips (its first frame and the chunks after it, one training clip) through the KV cache, guided
as its checkpoint records, each of a label (or a text teacher's prompt, drawn from a given list), and the state of
every chunk is kept at the student's times: the teacher's schedule holds them (the student's ``steps`` divide the
teacher's), so the student learns to take in one Euler step what the teacher takes in several
(:func:`ca2vdm.training.dmd.trajectory_loss`). Self-Forcing keeps a few points of each trajectory in the same way
(``generate_ode_pairs.py``), for a student that predicts the end point.

Shards of ``shard_size`` trajectories are written atomically as they fill, so memory holds one shard; a stopped run
continues with ``resume``, keeping its finished shards (trajectory ``i`` draws its noise and label from ``(seed, i)``
alone, so the result does not depend on where it stopped). With several processes, shard ``n`` is process
``n % world``'s; the main process writes ``index.json`` last, when every shard is there.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.config import to_dict
from ca2vdm.data.latent_encoding import check_unfinished
from ca2vdm.data.trajectories import INDEX_NAME, SETTINGS_NAME, shard_problem, shard_shape
from ca2vdm.errors import ConfigError, SettingError
from ca2vdm.generation.api import load_text_encoder
from ca2vdm.io.atomic import save_tensors_atomic, write_text_atomic
from ca2vdm.sampling.flow import sample
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training.distill_rollout import Condition, trajectory_condition


def check_prompts(cfg, checkpoint: str | Path, prompts: list[str] | None) -> None:
    """A text teacher samples prompts drawn from ``prompts``; a label or unconditional one takes none."""
    if cfg.text_encoder != "none" and not prompts:
        raise ConfigError(f"{checkpoint} is a text model (model.text_encoder={cfg.text_encoder}): give the prompts "
                          "its trajectories are sampled from (ca2vdm make-ode-pairs --prompts CAPTIONS)")
    if cfg.text_encoder == "none" and prompts:
        raise ConfigError(f"{checkpoint} is not a text model (model.text_encoder=none): it takes no prompts; leave "
                          "out --prompts")


def student_times(schedule: list[float], steps: int) -> list[float]:
    """Every ``len(schedule) // steps``-th time of a teacher's schedule: the student's ``steps + 1`` times."""
    teacher_steps = len(schedule) - 1
    if steps > teacher_steps or teacher_steps % steps:
        raise SettingError("steps", steps, f"must divide the teacher's {teacher_steps} steps, so that its schedule "
                           "holds the student's times")
    return schedule[::teacher_steps // steps]


@torch.no_grad()
def record_trajectories(pipe: LongVideoPipeline, condition: Condition, seeds: list[int], num_chunks: int,
                        steps: int) -> torch.Tensor:
    """(B, steps + 1, C, T, H, W): ``num_chunks`` chunks of ``len(seeds)`` videos of ``condition`` sampled by ``pipe``
    (the teacher, through its KV cache) from the noise of their seeds, each chunk's state at the student's times; the
    last point is the video (clamped in pixel space, as the pipeline's chunks are), which the next chunks are
    conditioned on."""
    schedule = pipe.schedule()
    every = (len(schedule) - 1) // (len(student_times(schedule, steps)) - 1)  # teacher steps per student step
    state = pipe.start(batch=len(seeds), seed=seeds, **condition.kwargs())
    chunks = []
    for _ in range(num_chunks):
        x = pipe.chunk_noise(state)
        points, denoise = [x], pipe.denoiser(state)
        for j in range(steps):
            x = sample(denoise, x, every, times=schedule[j * every:(j + 1) * every + 1])
            points.append(x)
        if pipe.pixel_space:
            points[-1] = points[-1].clamp(-1, 1)
        pipe.commit(state, points[-1])
        chunks.append(torch.stack(points, dim=1))  # (B, P, C, L, H, W)
    return torch.cat(chunks, dim=3)


def trajectory_label(seed: int, index: int, num_classes: int, null_share: float) -> int:
    """Trajectory ``index``'s label (a text teacher's: the index of its prompt): the null label (``num_classes``:
    unguided, unconditional) with probability ``null_share``, otherwise one drawn uniformly; a function of
    (seed, index) alone."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    if torch.rand((), generator=gen) < null_share:
        return num_classes
    return int(torch.randint(num_classes, (), generator=gen))


def write_pairs(checkpoint: str, out: str | Path, videos: int, steps: int, *, null_share: float = 0.1,
                seed: int = 0, batch: int = 8, shard_size: int = 64, resume: bool = False, device: str = "cpu",
                rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None,
                progress: bool = True, prompts: list[str] | None = None) -> dict:
    """Record ``videos`` trajectories of the teacher ``checkpoint`` into ``out`` (this process's shards); return the
    index, which the main process writes when every process is done. A text teacher's trajectories are each
    sampled from one of ``prompts`` (the index records them; a trajectory's label is its prompt's number)."""
    out = Path(out)
    model, meta = load_model(checkpoint, device)
    check_prompts(model.cfg, checkpoint, prompts)
    pipe = LongVideoPipeline.for_checkpoint(model, meta, step_cache="none",
                                            text_encoder=load_text_encoder(model, checkpoint))
    cfg = model.cfg
    times = student_times(pipe.schedule(), steps)
    settings = {"teacher": str(checkpoint), "model_config": to_dict(cfg), "sampler": meta.sampler.to_dict(),
                "steps": steps, "times": times, "frames": cfg.clip_frames, "videos": videos,
                "null_share": null_share, "seed": seed, "shard_size": shard_size, **({"prompts": prompts} if prompts
                                                                                    else {})}
    classes = len(prompts) if prompts else cfg.num_classes
    check_unfinished(out, settings, resume, SETTINGS_NAME, "recorded trajectories", "recording", finished_ok=True)
    barrier()
    if rank == 0 and not (out / SETTINGS_NAME).exists():
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / SETTINGS_NAME, json.dumps(settings, indent=1) + "\n")
    barrier()
    num_chunks = len(cfg.layout.clip_chunks(cfg.clip_frames))
    shards = [range(s, min(s + shard_size, videos)) for s in range(0, videos, shard_size)]
    mine = [n for n in range(len(shards)) if n % world == rank and shard_problem(
        out / _shard_name(n), len(shards[n]), shard_shape(settings))]  # new, or damaged: recorded (again)
    for n in tqdm(mine, desc="trajectories", unit="shard", disable=not (progress and rank == 0), dynamic_ncols=True):
        points, labels = [], []
        for part in torch.arange(shards[n].start, shards[n].stop).split(batch):
            rows = [trajectory_label(seed, int(i), classes, null_share) for i in part]
            condition = trajectory_condition(pipe, torch.tensor(rows), prompts)
            seeds = [seed * 1_000_003 + int(i) for i in part]
            points.append(record_trajectories(pipe, condition, seeds, num_chunks, steps).half().cpu())
            labels += rows
        save_tensors_atomic(out / _shard_name(n), {"points": torch.cat(points).contiguous(),
                                                   "labels": torch.tensor(labels, dtype=torch.long)})
    barrier()
    if rank == 0:
        index = {**settings, "shards": [[_shard_name(n), len(r)] for n, r in enumerate(shards)]}
        write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    barrier()
    return json.loads((out / INDEX_NAME).read_text())


def _shard_name(n: int) -> str:
    return f"shard_{n:05d}.safetensors"
