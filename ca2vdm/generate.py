"""Long-video generation to a file: load a checkpoint, stream chunks into an mp4, report per-chunk cost.

The chunks come from the Python API's loop (:meth:`ca2vdm.api.Pipeline.generate`); this module adds the file: the
given video streamed in, the output paths checked (:mod:`ca2vdm.output_paths`), stops (:mod:`ca2vdm.stopping`),
the contact sheet and the stats.

Memory is flat in the number of chunks and in the length of a given first video: each chunk is encoded as soon as
it is denoised, the KV cache is preallocated, a given video is streamed into the output and only the frames that can
still influence the next chunk are committed (:func:`conditioning_start`), and the optional contact sheet keeps at
most ``PREVIEW_CHUNKS`` chunks of thumbnails.

Options and paths are checked before any work: an output never replaces the checkpoint, the input, a device or
another output of the same run, and an existing video is replaced only with ``overwrite``. A stop (SIGINT or SIGTERM
under :class:`StopSignals`) keeps the finished chunks as a playable mp4.
"""
from __future__ import annotations

import json
import math
import resource
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .api import Pipeline, load_codec, model_input, model_output, pixel_size  # noqa: F401 (re-exported)
from .checkpoint import load_model
from .compile import warm_up
from .config import ModelConfig
from .output_paths import VIDEO_NAME, check_paths, output_path, preview_path  # noqa: F401 (re-exported)
from .pipeline import LongVideoPipeline
from .stopping import STOP_SIGNALS, StopSignals, Stopped  # noqa: F401 (re-exported)
from .video_io import VideoWriter, save_contact_sheet, stream_video, to_uint8
from .precision import dtype_name, resolve_dtype

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "demo.safetensors"
DEFAULT_OUT = Path("outputs") / "long_video.mp4"  # the CLI's scratch output, replaced by every run
PREVIEW_CHUNKS = 20     # chunks shown in the contact sheet, evenly spaced
PREVIEW_PIXELS = 128    # thumbnails are upscaled (nearest, by a whole factor) to about this size to be visible
SEED_MAX = 2 ** 64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1


@dataclass
class GenerationOptions:
    chunks: int = 20
    seed: int = 0
    steps: int | None = None        # None: the checkpoint's training config
    shift: float | None = None      # timestep shift of the sampler; None: the checkpoint's
    cfg_scale: float | None = None
    label: int | None = None
    cache: str = "kv"               # kv | none (recompute the window at every step) | full
    first_frame: str | None = None  # image or video to continue
    device: str = "auto"            # auto (CUDA when present) | cpu | cuda | cuda:N
    dtype: str | None = None        # fp32 | bf16 | fp16 (weights, KV cache); None: bf16 on CUDA, fp32 on CPU
    step_cache: str = "none"        # none or a name of ca2vdm.step_cache.POLICIES
    teacache_thresh: float = 0.1
    step_cache_options: dict = field(default_factory=dict)  # the policy's settings (step_cache.parse_options)
    fps: int = 8
    preview: bool = False
    verbose: bool = False
    overwrite: bool = False         # replace an existing output video (and its contact sheet)
    stats: str | None = None        # JSON file for the stats (replaced if it exists)
    codec_path: str | None = None   # the autoencoder's folder, when not where the checkpoint recorded it
    compile: bool = False           # compile the blocks once per process (ca2vdm.compile); seconds in the stats


def resolve_device(name: str) -> torch.device:
    """auto (CUDA when present), cpu, cuda or cuda:N as a torch device; a clear error for anything else and for CUDA
    where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"--device {name}: not supported; use cpu, cuda or cuda:N (or auto)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def check_options(opts: GenerationOptions) -> None:
    """Refuse option values that would fail later or be silently wrong; each message names the flag."""
    if opts.chunks < 1:
        raise ValueError(f"--chunks must be a positive number of chunks, got {opts.chunks}")
    if opts.shift is not None and not (math.isfinite(opts.shift) and opts.shift > 0):
        raise ValueError(f"--shift must be a finite number > 0 (1 = evenly spaced steps), got {opts.shift}")
    if opts.cfg_scale is not None and not math.isfinite(opts.cfg_scale):
        raise ValueError(f"--cfg-scale must be a finite number, got {opts.cfg_scale}")
    if not 0 <= opts.seed <= SEED_MAX:
        raise ValueError(f"--seed must be in 0 .. 2**64 - 1 ({SEED_MAX}), got {opts.seed}")
    resolve_dtype(opts.dtype, "cpu")  # a bad name is refused before any work
    if not (math.isfinite(opts.teacache_thresh) and opts.teacache_thresh >= 0):
        raise ValueError(f"--teacache-thresh must be a finite number >= 0 (0 = compute every step), "
                         f"got {opts.teacache_thresh}")


def check_label(label: int | None, num_classes: int) -> None:
    """A label must be one of the model's classes (its null label, ``num_classes``, is for guidance only)."""
    if label is None:
        return
    if num_classes == 0:
        raise ValueError(f"--label {label}: this model is unconditional; omit --label")
    if not 0 <= label < num_classes:
        raise ValueError(f"--label {label} is out of range: this model's labels are 0 to {num_classes - 1} "
                         "(omit --label for an unconditional video)")


def _reach(cfg: ModelConfig) -> int:
    """How many frames back a given frame can still influence the next chunk (see :func:`conditioning_start`)."""
    return cfg.max_context_frames + (cfg.depth - 1) * (cfg.max_context_frames + cfg.chunk_frames - 1)


def conditioning_start(pipe: LongVideoPipeline, total: int) -> int:
    """The first frame of a ``total``-frame given video that can still influence the chunks after it; the frames
    before it need not be committed (``LongVideoPipeline.start(frames_before=...)``).

    The next chunk attends to the last ``max_context_frames`` frames. With the KV cache, a frame's keys in layer l
    were computed by attending to the window before its chunk in layer l - 1, so the influence reaches back
    ``depth`` windows, each widened by up to a chunk for alignment. The result is a chunk boundary; 0 in mode full.
    Attention sinks (``model.sink_frames``) are kept besides (``LongVideoPipeline.start``): the result is then 0 or
    past them.
    """
    cfg = pipe.model.cfg
    if pipe.cache_mode == "full":
        return 0
    start, first = max(0, total - _reach(cfg)), int(cfg.first_frame_chunk)
    start = start if start < first else start - (start - first) % cfg.chunk_frames
    return start if start > cfg.sink_frames else 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Output:
    """What is written for one video: the file, thumbnails for the contact sheet, the stats."""
    path: Path
    writer: VideoWriter
    stats: dict
    preview: list[np.ndarray] = field(default_factory=list)


def generate_video(checkpoint: str | Path, out: str | Path, opts: GenerationOptions,
                   stop: StopSignals | None = None) -> dict:
    """Generate ``opts.chunks`` chunks into the mp4 ``out`` (written atomically; see :func:`output_path`); return
    the stats dict, also written to ``opts.stats``.

    The video holds the first frame(s) (given, or drawn by the model when it has a first-frame chunk) followed by
    ``opts.chunks * chunk_frames`` generated frames. Raises ValueError (naming the flag) before any work for bad
    options and paths; on a stop (``stop``, or KeyboardInterrupt) raises :class:`Stopped` after keeping the
    finished chunks.
    """
    check_options(opts)
    out = output_path(out)
    check_paths(checkpoint, out, opts)
    pipe, compile_seconds = pipeline_for(checkpoint, opts)
    try:
        stats = generate_batch(pipe, {opts.seed: out}, opts, stop,
                               {"checkpoint": str(checkpoint), "compile_seconds": compile_seconds})[0]
    except Stopped as stopped:
        if stopped.stats and opts.stats:
            write_stats(stopped.stats[0], opts.stats)
        raise Stopped(stopped.signum, stopped.stats[0] if stopped.stats else None) from None
    if opts.stats:
        write_stats(stats, opts.stats)
    return stats


def pipeline_for(checkpoint: str | Path, opts: GenerationOptions, batch: int = 1) -> tuple[Pipeline, float | None]:
    """The pipeline (model, codec, sampler settings) ``opts`` ask for; with ``opts.compile`` the blocks are compiled
    now, for ``batch`` videos at a time (their seconds are returned, else None)."""
    device = resolve_device(opts.device)
    model, meta = load_model(checkpoint, device)
    check_label(opts.label, model.cfg.num_classes)
    pipe = Pipeline.from_model(model, meta, checkpoint, device, steps=opts.steps, shift=opts.shift,
                               cfg_scale=opts.cfg_scale, cache=opts.cache, step_cache=opts.step_cache,
                               teacache_thresh=opts.teacache_thresh, step_cache_options=opts.step_cache_options,
                               codec_path=opts.codec_path, dtype=resolve_dtype(opts.dtype, device),
                               compile=opts.compile)
    return pipe, warm_up(pipe.pipeline, batch, opts.label) if opts.compile else None


def generate_batch(pipe: Pipeline, outs: dict[int, Path], opts: GenerationOptions, stop: StopSignals | None = None,
                   extra_stats: dict | None = None) -> list[dict]:
    """Generate one video per seed of ``outs`` (seed -> mp4 path, already checked), all in one batch; return their
    stats (each starting with ``extra_stats``). Each video's noise comes from its own seed's generator, so it equals
    the video generated alone. On a stop, raises :class:`Stopped` whose ``stats`` lists the videos' stats after
    keeping their finished chunks (None: nothing was finished)."""
    poll = stop.check if stop is not None else lambda: None
    weight = pipe.model.x_embedder.weight
    settings = pipe.settings
    outputs = []
    for seed, path in outs.items():
        stats = {**(extra_stats or {}), "video": str(path), "seed": seed, "chunks": [], "frames": 0,
                 "cache": opts.cache, "steps": settings["steps"], "shift": settings["shift"],
                 "cfg_scale": settings["cfg_scale"], "step_cache": opts.step_cache, "device": str(weight.device),
                 "dtype": dtype_name(weight.dtype)}
        outputs.append(_Output(path, VideoWriter(path, fps=opts.fps), stats))
    tic = time.perf_counter()
    try:
        _write_chunks(pipe, opts, list(outs), outputs, poll)
    except KeyboardInterrupt:
        signum = getattr(stop, "signum", None) or signal.SIGINT  # a plain KeyboardInterrupt: Ctrl-C
        if not outputs[0].stats["chunks"]:
            for output in outputs:
                output.writer.abort()
            raise Stopped(signum, None) from None
        for output in outputs:
            output.stats["stopped_by"] = signal.Signals(signum).name
        raise Stopped(signum, [_finish(output, opts, pipe.model.cfg, weight.device, tic) for output in outputs]) \
            from None
    except BaseException:
        for output in outputs:
            output.writer.abort()
        raise
    return [_finish(output, opts, pipe.model.cfg, weight.device, tic) for output in outputs]


def _copy_given(pipe: Pipeline, path: str, outputs: list[_Output],
                poll: Callable[[], None]) -> tuple[torch.Tensor, int]:
    """Stream a given image or video into the outputs at the model's resolution, holding only the frames that can
    still influence the next chunk; return those (3, T, H, W), the attention sinks first, and how many frames came
    before the others."""
    cfg = pipe.model.cfg
    most = _reach(cfg) + cfg.chunk_frames - 1  # the most frames conditioning_start keeps
    kept: deque[torch.Tensor] = deque(maxlen=None if pipe.pipeline.cache_mode == "full" else most)
    sinks: list[torch.Tensor] = []
    total = 0
    for pixels in stream_video(path, size=pipe.size):  # (3, T, H, W) batches
        poll()
        for output in outputs:
            output.writer.write(to_uint8(pixels))
        frames = pixels.unbind(1)
        sinks += frames[:cfg.sink_frames - len(sinks)]
        kept.extend(frames)
        total += pixels.shape[1]
    start = conditioning_start(pipe.pipeline, total)
    return torch.stack((sinks if start else []) + list(kept)[start - total:], dim=1), start


def _write_chunks(pipe: Pipeline, opts: GenerationOptions, seeds: list[int], outputs: list[_Output],
                  poll: Callable[[], None]) -> None:
    """Open the videos with the given image or video (streamed), then write each chunk (the model's first frame
    included) as soon as it is denoised, polling for a stop after every step."""
    given, frames_before = None, 0
    if opts.first_frame:
        kept, frames_before = _copy_given(pipe, opts.first_frame, outputs, poll)  # (3, T, H, W)
        for output in outputs:
            output.preview.append(to_uint8(kept[:, -2 * pipe.model.cfg.chunk_frames:]))  # a contact sheet row
        given = kept.expand(len(seeds), *kept.shape)  # (B, 3, T, H, W): the same frames for every seed
    keep_every = math.ceil(opts.chunks / PREVIEW_CHUNKS)
    with (tqdm(total=opts.chunks, desc="chunks", unit="chunk", dynamic_ncols=True) as progress,
          tqdm(total=pipe.pipeline.steps, desc="steps", leave=False, disable=not opts.verbose) as steps):
        def on_step(i: int) -> None:
            steps.update(1)
            poll()

        for chunk in pipe.generate(opts.chunks, label=opts.label, seed=seeds, batch=len(seeds), first_frames=given,
                                   frames_before=frames_before, on_step=on_step):
            steps.reset()
            for output, frames in zip(outputs, chunk.pixels):  # (L, H, W, 3) per video
                output.writer.write(frames)
                if chunk.index < 0:  # the first frame the model drew
                    output.preview.append(frames)
                    continue
                output.stats["chunks"].append({"index": chunk.index, "seconds": chunk.seconds,
                                               "model_evals": chunk.model_evals, "skipped_evals": chunk.skipped_evals})
                if opts.preview and chunk.index % keep_every == 0:
                    output.preview.append(frames)
            progress.update(chunk.index >= 0)


def _finish(output: _Output, opts: GenerationOptions, cfg: ModelConfig, device: torch.device, tic: float) -> dict:
    """Close the video (moving it into place), then write the contact sheet; return the stats."""
    stats = output.stats
    stats["frames"] = output.writer.frames_written
    output.writer.close()
    stats["seconds"] = time.perf_counter() - tic
    stats["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        stats["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    if opts.preview:
        scale = max(1, PREVIEW_PIXELS // output.preview[0].shape[1])
        sheet = np.concatenate(output.preview).repeat(scale, axis=1).repeat(scale, axis=2)
        save_contact_sheet(sheet, preview_path(output.path), frames_per_row=2 * cfg.chunk_frames)
        stats["preview"] = str(preview_path(output.path))
    return stats


def write_stats(stats: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(stats, indent=2) + "\n")
