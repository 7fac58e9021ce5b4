"""Generation modes timed in lockstep: chunk i of every mode is run before chunk i + 1 of any (in an order that
rotates with i), so a machine that speeds up or slows down over minutes shifts all modes alike and their ratios stay
comparable. Used by the benchmarks (``scripts/bench/ar_scaling.py``, ``scripts/bench/precision.py``).

:func:`measure_modes`: the KV cache against the recompute baselines (a mode is ``kv``, ``none`` or ``full``, plus
``+teacache@T`` for TeaCache at threshold T and ``+compile`` for compiled blocks), per-chunk seconds and analytic
FLOPs. :func:`measure_precisions`: every precision teacher-forced on the fp32 run's chunks, so a chunk's difference
from fp32 is one chunk's rounding, not the divergence of a free-running rollout. Each mode or precision samples on
its own copy of the model: the model given is never changed.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.models.flops import chunk_flops
from ca2vdm.runtime.device import DTYPES
from ca2vdm.sampling.compile import compile_blocks, warm_up
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import TeaCache
from ca2vdm.sampling.step_cache.teacache import IDENTITY

MODES = ("kv", "none", "full")


def teacache_mode(threshold: float) -> str:
    """The mode name of the KV cache with TeaCache at ``threshold``."""
    return f"kv+teacache@{threshold:g}"


def new_run(model: torch.nn.Module, meta: CheckpointMetadata, mode: str, seed: int, batch: int, label: int | None,
            steps: int | None = None, compile_backend: str = "inductor"):
    """A pipeline on its own copy of the model (compiling changes it), its started state, and the seconds its
    compile warm-up took (None when not compiled)."""
    model = copy.deepcopy(model)
    policy = None
    if "+teacache@" in mode:
        coefficients = meta.calibration.get("teacache_coefficients") or IDENTITY
        policy = TeaCache(threshold=float(mode.split("@")[1]), coefficients=coefficients)
    pipe = LongVideoPipeline.for_checkpoint(model, meta, cache=mode.split("+")[0], policy=policy, steps=steps)
    compile_seconds = None
    if mode.endswith("+compile"):
        compile_blocks(model, compile_backend)
        compile_seconds = warm_up(pipe, batch, label)
    state = pipe.start(batch=batch, seed=seed, label=label)
    pipe.next_chunk(state)  # the first frame (and warm-up); not timed
    return pipe, state, compile_seconds


def measure_modes(model: torch.nn.Module, meta: CheckpointMetadata, modes: list[str], chunks: int, seed: int,
                  batch: int = 1, label: int | None = 0, steps: int | None = None,
                  compile_backend: str = "inductor") -> dict[str, list[dict]]:
    """Per-chunk seconds and FLOPs of every mode (``batch`` videos at once), the modes interleaved chunk by chunk.
    With a label (and the checkpoint's guidance scale) both guidance branches run, as in class-conditional use.
    A compiled mode's first row also carries its ``compile_seconds``."""
    runs = {mode: new_run(model, meta, mode, seed, batch, label, steps, compile_backend) for mode in modes}
    rows = {mode: [] for mode in modes}
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    for index in range(chunks):
        for mode in modes[index % len(modes):] + modes[:index % len(modes)]:
            pipe, state, compile_seconds = runs[mode]
            frames_before = state.frames
            sync()
            tic = time.perf_counter()
            chunk = pipe.next_chunk(state)
            sync()
            seconds = time.perf_counter() - tic
            evaluated = chunk.model_evals / (chunk.model_evals + chunk.skipped_evals)  # share of stack passes run
            steps = pipe.settings.steps
            flops = chunk_flops(model.cfg, mode.split("+")[0], frames_before, chunk.frames.shape[2], steps,
                                batch * state.conditioning.groups, evaluated)
            row = {"chunk": index, "seconds": seconds, "flops": flops, "frames_before": frames_before}
            rows[mode].append(row if index or compile_seconds is None else {**row, "compile_seconds": compile_seconds})
    return rows


def measure_precisions(model: torch.nn.Module, meta: CheckpointMetadata, dtypes: list[str], chunks: int,
                       label: int | None, seed: int) -> tuple[dict, dict]:
    """Per precision: (summary, per-chunk rows of seconds and worst / mean |difference from fp32|). Frames compared
    are in [-1, 1]; the first-frame chunk is left out of the timing."""
    pipes = {name: LongVideoPipeline.for_checkpoint(copy.deepcopy(model).to(DTYPES[name]), meta)
             for name in ["fp32"] + [d for d in dtypes if d != "fp32"]}
    states = {name: pipe.start(label=label, seed=seed) for name, pipe in pipes.items()}
    rows = {name: [] for name in pipes}
    others = list(pipes)[1:]
    for i in range(int(model.cfg.first_frame_chunk) + chunks):
        tic = time.perf_counter()
        reference = pipes["fp32"].next_chunk(states["fp32"]).frames  # (1, C, L, H, W): every precision's context
        rows["fp32"].append({"seconds": time.perf_counter() - tic, "max_abs": 0.0, "mean_abs": 0.0})
        for name in others[i % len(others):] + others[:i % len(others)] if others else []:
            tic = time.perf_counter()
            frames = pipes[name].next_chunk(states[name], commit_frames=reference).frames
            error = (frames - reference).abs()
            rows[name].append({"seconds": time.perf_counter() - tic, "max_abs": error.max().item(),
                               "mean_abs": error.mean().item()})
    first = int(model.cfg.first_frame_chunk)  # the first-frame chunk is one frame: left out of the timing
    median = {name: statistics.median(r["seconds"] for r in rows[name][first:]) for name in pipes}
    summary = {name: {"median_seconds_per_chunk": median[name], "speed_vs_fp32": median["fp32"] / median[name],
                      "kv_cache_bytes": pipe.model.new_cache(1).nbytes(),
                      "max_abs_vs_fp32": max(r["max_abs"] for r in rows[name]),
                      "mean_abs_vs_fp32": statistics.mean(r["mean_abs"] for r in rows[name])}
               for name, pipe in pipes.items()}
    return summary, rows
