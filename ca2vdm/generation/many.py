"""Many videos: ``--num-videos N --batch B``, in one process or split across processes.

Video i has seed ``seed + i`` and is written to ``<out stem>_seed<seed + i><suffix>`` beside ``--out``. Videos run
``B`` at a time through one batched pass (:func:`ca2vdm.generation.video_files.generate_batch`); each draws its
noise from its own seed's generator, so it equals the video that seed gives alone, whatever the batch (float
rounding aside).

Under ``accelerate launch --multi_gpu --num_processes P`` (or ``torchrun --nproc_per_node P``) every process reads
its rank from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), takes the seeds ``rank, rank + P, ...``
and, with ``--device cuda`` (or ``auto`` on a GPU machine), the GPU ``cuda:LOCAL_RANK``. No process group is
needed: the processes share nothing but the output folder. Every mp4 is written atomically (a temporary file
renamed into place when finished), so a process that fails or is stopped leaves every video already finished, its
own and the others', intact. The stats (``--stats``) list one entry per video; with P > 1 each process writes its
own file, ``<stats stem>.rank<r>.json``.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from ca2vdm.config import SEED_MAX
from ca2vdm.errors import SettingError, opt
from ca2vdm.generation.video_files import GenerationOptions, check_options, generate_batch, pipeline_for, write_stats
from ca2vdm.io.paths import check_paths, output_path
from ca2vdm.runtime.device import resolve_device
from ca2vdm.runtime.signals import Stopped, StopSignals


def process_share() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process as set by accelerate launch or torchrun; (0, 1, 0) alone."""
    return tuple(int(os.environ.get(name, default)) for name, default in
                 (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))


def video_path(out: Path, seed: int) -> Path:
    """The mp4 of the video with ``seed``, beside ``out``."""
    return out.with_name(f"{out.stem}_seed{seed}{out.suffix}")


def stats_path(stats: str, rank: int, world: int) -> str:
    """Each process's stats file: ``stats`` alone, ``<stem>.rank<r>.json`` beside it with several processes."""
    return stats if world == 1 else str(Path(stats).with_name(f"{Path(stats).stem}.rank{rank}.json"))


def assigned_seeds(first: int, num_videos: int, rank: int, world: int) -> list[int]:
    """The seeds process ``rank`` of ``world`` generates: every world-th one of first .. first + num_videos - 1."""
    return list(range(first, first + num_videos))[rank::world]


def generate_videos(checkpoint: str | Path | None, out: str | Path, opts: GenerationOptions, num_videos: int,
                    batch: int = 1, stop: StopSignals | None = None) -> dict:
    """Generate this process's share of ``num_videos`` videos, ``batch`` at a time; return the stats
    ``{"videos": [...], "rank", "world_size", "compile_seconds"}``, also written to ``opts.stats`` (per process).

    Options and every output path are checked before any work; on a stop raises :class:`Stopped` (its stats list the
    videos finished or kept so far, or None)."""
    check_options(opts)
    for name, value in (("num_videos", num_videos), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError(name, value, "must be a positive whole number")
    if opts.seed + num_videos - 1 > SEED_MAX:
        raise SettingError("num_videos", num_videos, f"from {opt('seed', opts.seed)} passes the largest seed "
                           f"{SEED_MAX}")
    rank, world, local_rank = process_share()
    if world > 1 and resolve_device(opts.device) == torch.device("cuda"):  # auto or cuda: this process's GPU
        opts = replace(opts, device=f"cuda:{local_rank}")
    stats_file = stats_path(opts.stats, rank, world) if opts.stats else None
    seeds = assigned_seeds(opts.seed, num_videos, rank, world)
    paths = {seed: video_path(output_path(out), seed) for seed in seeds}
    for i, path in enumerate(paths.values()):  # the stats file is checked against the first video
        check_paths(checkpoint, path, first_frame=opts.first_frame, preview=opts.preview,
                    stats=stats_file if i == 0 else None, overwrite=opts.overwrite,
                    adapters=[adapter for adapter, _ in opts.lora], base=opts.base)
    summary = {"videos": [], "rank": rank, "world_size": world, "compile_seconds": None}
    if not seeds:
        return summary
    pipe, summary["compile_seconds"] = pipeline_for(checkpoint, opts, min(batch, len(seeds)))
    for start in range(0, len(seeds), batch):
        group = {seed: paths[seed] for seed in seeds[start:start + batch]}
        try:
            summary["videos"] += generate_batch(pipe, group, opts, stop, {"checkpoint": str(checkpoint)})
        except Stopped as stopped:
            summary["videos"] += stopped.stats or []
            stopped.stats = summary if summary["videos"] else None  # every video kept, as a return would list
            if stats_file:
                write_stats(summary, stats_file)
            raise
        if stats_file:  # after every batch: the finished videos are listed even if a later one fails
            write_stats(summary, stats_file)
    return summary
