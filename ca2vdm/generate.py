"""Long-video generation to a file: load a checkpoint, stream chunks into an mp4, report per-chunk cost.

Memory is flat in the number of chunks: each chunk is encoded as soon as it is denoised, the KV cache is
preallocated, and the optional contact sheet keeps at most ``PREVIEW_CHUNKS`` chunks of thumbnails.
"""
from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_model
from .pipeline import LongVideoPipeline
from .step_cache import build_step_cache
from .video_io import VideoWriter, read_video, save_contact_sheet, to_uint8

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "demo.safetensors"
PREVIEW_CHUNKS = 20     # chunks shown in the contact sheet, evenly spaced
PREVIEW_SCALE = 4       # thumbnails are upscaled (nearest) so that 32-pixel frames are visible


@dataclass
class GenerationOptions:
    chunks: int = 20
    seed: int = 0
    steps: int | None = None        # None: the checkpoint's training config
    cfg_scale: float | None = None
    label: int | None = None
    cache: str = "kv"               # kv | none (recompute the window at every step) | full
    first_frame: str | None = None  # image or video to continue
    device: str = "cpu"
    step_cache: str = "none"        # none | teacache | fastercache | adacache
    teacache_thresh: float = 0.1
    fps: int = 8
    preview: bool = False
    verbose: bool = False


def resolve_device(name: str) -> torch.device:
    """A torch device, with a clear error for CUDA requested on a machine without it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate_video(checkpoint: str | Path, out: str | Path, opts: GenerationOptions) -> dict:
    """Generate ``opts.chunks`` chunks into the mp4 ``out`` (written atomically); return the stats dict.

    The video holds the first frame(s) (given, or drawn by the model when it has a first-frame chunk) followed by
    ``opts.chunks * chunk_frames`` generated frames.
    """
    if opts.chunks < 1:
        raise ValueError(f"--chunks must be a positive number of chunks, got {opts.chunks}")
    if opts.cfg_scale is not None and not math.isfinite(opts.cfg_scale):
        raise ValueError(f"--cfg-scale must be a finite number, got {opts.cfg_scale}")
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a directory; pass a file name such as {Path(out) / 'video.mp4'}")
    device = resolve_device(opts.device)
    model, meta = load_model(checkpoint, device)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    step_cache = build_step_cache(opts.step_cache, opts.teacache_thresh, meta.get("teacache_coefficients"))
    pipe = LongVideoPipeline.from_metadata(model, meta, steps=opts.steps, cfg_scale=opts.cfg_scale,
                                           cache_mode=opts.cache, step_cache=step_cache)
    first = None
    if opts.first_frame:
        first = read_video(opts.first_frame, size=model.cfg.resolution)  # all of it goes into the output
        first = first[None]  # (1, C, T0, H, W)
    out = Path(out)
    stats = {"checkpoint": str(checkpoint), "chunks": [], "frames": 0, "cache": opts.cache, "steps": pipe.steps,
             "cfg_scale": pipe.cfg_scale, "step_cache": opts.step_cache}
    keep_every = math.ceil(opts.chunks / PREVIEW_CHUNKS)
    preview: list[np.ndarray] = []
    tic = time.perf_counter()
    with VideoWriter(out, fps=opts.fps) as writer:
        if first is not None:
            writer.write(to_uint8(first[0]))
            preview.append(to_uint8(first[0]))
        state = pipe.start(label=opts.label, seed=opts.seed, first_frames=first)
        if first is None and model.cfg.first_frame_chunk:  # the model draws the first frame itself
            image = to_uint8(pipe.next_chunk(state).frames[0].float())
            writer.write(image)
            preview.append(image)
        for index in tqdm(range(opts.chunks), desc="chunks", unit="chunk", dynamic_ncols=True):
            chunk_tic = time.perf_counter()
            with tqdm(total=pipe.steps, desc=f"chunk {index}", leave=False, disable=not opts.verbose) as steps:
                chunk = pipe.next_chunk(state, on_step=lambda i: steps.update(1))
            frames = to_uint8(chunk.frames[0].float())  # (L, H, W, 3)
            writer.write(frames)
            stats["chunks"].append({"index": index, "seconds": time.perf_counter() - chunk_tic,
                                    "model_evals": chunk.model_evals, "skipped_evals": chunk.skipped_evals})
            if opts.preview and index % keep_every == 0:
                preview.append(frames)
        stats["frames"] = writer.frames_written
    stats["seconds"] = time.perf_counter() - tic
    stats["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        stats["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    if opts.preview:
        sheet = np.concatenate(preview).repeat(PREVIEW_SCALE, axis=1).repeat(PREVIEW_SCALE, axis=2)
        save_contact_sheet(sheet, out.with_suffix(".png"), frames_per_row=2 * model.cfg.chunk_frames)
        stats["preview"] = str(out.with_suffix(".png"))
    return stats


def write_stats(stats: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(stats, indent=2) + "\n")
