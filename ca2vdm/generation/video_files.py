"""Long-video generation to a file: load a checkpoint, stream chunks into an mp4, report per-chunk cost.

The chunks come from the Python API's loop (:meth:`ca2vdm.generation.api.Pipeline.generate`); this module adds the
file: the given video streamed in (:mod:`ca2vdm.generation.given`), the output paths checked
(:mod:`ca2vdm.io.paths`), stops (:class:`~ca2vdm.runtime.signals.StopSignals`), the contact sheet and the stats.

Memory is flat in the number of chunks and in the length of a given first video: each chunk is encoded as soon as
it is denoised, the KV cache is preallocated, a given video is streamed into the output and only the frames that can
still influence the next chunk are committed, and the optional contact sheet keeps at most ``PREVIEW_CHUNKS`` chunks
of thumbnails.

Options and paths are checked before any work: an output never replaces the checkpoint, the input, a device or
another output of the same run, and an existing video is replaced only with ``overwrite``. A stop (SIGINT or SIGTERM
under :class:`~ca2vdm.runtime.signals.StopSignals`) keeps the finished chunks as a playable mp4.
"""
from __future__ import annotations

import json
import math
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ca2vdm.config import SWITCH_MODES, SamplerSettings, check_seed
from ca2vdm.config.conditioning import check_prompt
from ca2vdm.config.sampler import TEACACHE_THRESH, with_teacache_thresh
from ca2vdm.errors import SettingError
from ca2vdm.generation.api import Pipeline, load_pipeline
from ca2vdm.generation.given import stream_given
from ca2vdm.io.atomic import write_text_atomic
from ca2vdm.io.paths import check_paths, output_path, preview_path
from ca2vdm.io.video import VideoWriter, save_contact_sheet, to_uint8
from ca2vdm.runtime.device import dtype_name, resolve_dtype
from ca2vdm.runtime.signals import Stopped, StopSignals
from ca2vdm.sampling.compile import warm_up
from ca2vdm.sampling.conditioning import check_kind

PREVIEW_CHUNKS = 20     # chunks shown in the contact sheet, evenly spaced
PREVIEW_PIXELS = 128    # thumbnails are upscaled (nearest, by a whole factor) to about this size to be visible
FPS = 8                 # frame rate of written videos


@dataclass
class GenerationOptions:
    """What to generate and where: the video (chunks, seed, label, first frame), the sampler (overrides of the
    checkpoint's :class:`~ca2vdm.config.SamplerSettings`, by field name), where it runs and what is written."""
    chunks: int = 20
    seed: int = 0
    label: int | None = None
    first_frame: str | None = None  # image or video to continue
    prompt: str | None = None       # a text model's prompt (label: a label model's)
    switches: dict = field(default_factory=dict)  # {chunk index: new prompt (str) or label (int)}
    switch_mode: str = "recache"    # what a switch does to the window: recache | keep | reset
    sampler: dict = field(default_factory=dict)  # e.g. {"steps": 8, "step_cache": "taylorseer"}; unset: recorded
    teacache_thresh: float | None = None  # the older spelling of TeaCache's threshold setting
    device: str = "auto"            # auto (CUDA when present) | cpu | cuda | cuda:N
    dtype: str | None = None        # fp32 | bf16 | fp16 (weights, KV cache); None: bf16 on CUDA, fp32 on the CPU
    codec_path: str | None = None   # the autoencoder's folder, when not where the checkpoint recorded it
    lora: list = field(default_factory=list)  # LoRA adapters folded into the weights: [(path, scale)], stacked
    base: str | None = None         # a downloaded Wan folder: VAE, UMT5 and tokenizer (ca2vdm.generation.wan_base)
    size: tuple[int, int] | None = None  # (height, width) pixels of a Wan model's frames; None: the checkpoint's own
    offload_text_encoder: bool = False  # the base's UMT5 waits on the CPU except while it encodes a prompt
    compile: bool = False           # compile the blocks once per process (ca2vdm.sampling.compile); seconds in stats
    fps: int = FPS
    preview: bool = False
    verbose: bool = False
    overwrite: bool = False         # replace an existing output video (and its contact sheet)
    stats: str | None = None        # JSON file for the stats (replaced if it exists)


def check_options(opts: GenerationOptions) -> None:
    """Refuse option values that would fail later or be silently wrong, before any work (SettingError)."""
    if isinstance(opts.chunks, bool) or not isinstance(opts.chunks, int) or opts.chunks < 1:
        raise SettingError("chunks", opts.chunks, "must be a positive number of chunks")
    check_seed(opts.seed)
    resolve_dtype(opts.dtype, "cpu")
    SamplerSettings().replace(**opts.sampler)  # each value checked (the checkpoint's settings are not known yet)
    if opts.teacache_thresh is not None:
        TEACACHE_THRESH.check("teacache_thresh", opts.teacache_thresh)
    if opts.prompt is not None:
        check_prompt(opts.prompt)
    if opts.switch_mode not in SWITCH_MODES:
        raise SettingError("switch_mode", opts.switch_mode, f"must be one of {', '.join(SWITCH_MODES)}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Output:
    """What is written for one video: the file, thumbnails for the contact sheet, the stats."""
    path: Path
    writer: VideoWriter
    stats: dict
    preview: list[np.ndarray] = field(default_factory=list)


def generate_video(checkpoint: str | Path | None, out: str | Path, opts: GenerationOptions,
                   stop: StopSignals | None = None) -> dict:
    """Generate ``opts.chunks`` chunks into the mp4 ``out`` (written atomically; see
    :func:`~ca2vdm.io.paths.output_path`); return the stats dict, also written to ``opts.stats``.

    The video holds the first frame(s) (given, or drawn by the model when it has a first-frame chunk) followed by
    ``opts.chunks * chunk_frames`` generated frames. Raises SettingError before any work for bad options and paths;
    on a stop (``stop``, or KeyboardInterrupt) raises :class:`~ca2vdm.runtime.signals.Stopped` (its ``stats``: the
    finished chunks kept, or None) after keeping the finished chunks.
    """
    check_options(opts)
    out = output_path(out)
    check_paths(checkpoint, out, first_frame=opts.first_frame, preview=opts.preview, stats=opts.stats,
                overwrite=opts.overwrite, adapters=[path for path, _ in opts.lora], base=opts.base)
    pipe, compile_seconds = pipeline_for(checkpoint, opts)
    try:
        [stats] = generate_batch(pipe, {opts.seed: out}, opts, stop,
                                 {"checkpoint": str(checkpoint), **({"base": str(opts.base)} if opts.base else {}),
                                  "compile_seconds": compile_seconds,
                                  **({"lora": [[str(p), s] for p, s in opts.lora]} if opts.lora else {})})
    except Stopped as stopped:
        stopped.stats = stopped.stats[0] if stopped.stats else None  # this video's stats, as a return would give
        if stopped.stats and opts.stats:
            write_stats(stopped.stats, opts.stats)
        raise
    if opts.stats:
        write_stats(stats, opts.stats)
    return stats


def pipeline_for(checkpoint: str | Path | None, opts: GenerationOptions,
                 batch: int = 1) -> tuple[Pipeline, float | None]:
    """The pipeline (model, codec, sampler settings) ``opts`` ask for; with ``opts.compile`` the blocks are compiled
    now, for ``batch`` videos at a time (their seconds are returned, else None)."""
    pipe = load_pipeline(checkpoint, opts.device, base=opts.base, size=opts.size,
                         offload_text_encoder=opts.offload_text_encoder, dtype=opts.dtype, codec_path=opts.codec_path,
                         compile=opts.compile, lora=opts.lora, **opts.sampler)
    if opts.teacache_thresh is not None:  # the command line's older spelling of a setting of the checkpoint's policy
        legacy = with_teacache_thresh(pipe.settings, opts.teacache_thresh, opts.sampler.get("step_cache_options"))
        pipe = pipe.with_settings(step_cache_options=legacy.step_cache_options)
    check_kind(pipe.model, opts.label, opts.prompt)
    return pipe, warm_up(pipe.sampler, batch, opts.label, opts.prompt) if opts.compile else None


def generate_batch(pipe: Pipeline, outs: dict[int, Path], opts: GenerationOptions, stop: StopSignals | None = None,
                   extra_stats: dict | None = None) -> list[dict]:
    """Generate one video per seed of ``outs`` (seed -> mp4 path, already checked), all in one batch; return their
    stats (each starting with ``extra_stats``). Each video's noise comes from its own seed's generator, so it equals
    the video generated alone. On a stop, raises :class:`~ca2vdm.runtime.signals.Stopped` whose ``stats`` lists the
    videos' stats after keeping their finished chunks (None: nothing was finished)."""
    poll = stop.check if stop is not None else lambda: None
    model = pipe.model
    settings = pipe.settings
    outputs = []
    for seed, path in outs.items():
        stats = {**(extra_stats or {}), "video": str(path), "seed": seed, "chunks": [], "frames": 0,
                 "cache": settings.cache, "steps": settings.steps, "shift": settings.shift,
                 "cfg_scale": settings.cfg_scale, "step_cache": settings.step_cache,
                 "step_cache_options": dict(settings.step_cache_options), "device": str(model.device),
                 **({"prompt": opts.prompt} if opts.prompt else {}),
                 **({"switches": {str(k): v for k, v in opts.switches.items()}, "switch_mode": opts.switch_mode}
                    if opts.switches else {}),
                 "dtype": dtype_name(model.dtype)}
        outputs.append(_Output(path, VideoWriter(path, fps=opts.fps, overwrite=True), stats))
    tic = time.perf_counter()
    try:
        _write_chunks(pipe, opts, list(outs), outputs, poll)
    except KeyboardInterrupt:
        signum = getattr(stop, "signum", None) or signal.SIGINT  # a plain KeyboardInterrupt: Ctrl-C
        kept = None
        if outputs[0].stats["chunks"]:
            for output in outputs:
                output.stats["stopped_by"] = signal.Signals(signum).name
            kept = [_finish(output, opts, sheet_row(pipe), model.device, tic) for output in outputs]
        else:
            for output in outputs:
                output.writer.abort()
        raise Stopped(signum, kept) from None
    except BaseException:
        for output in outputs:
            output.writer.abort()
        raise
    return [_finish(output, opts, sheet_row(pipe), model.device, tic) for output in outputs]


def _write_chunks(pipe: Pipeline, opts: GenerationOptions, seeds: list[int], outputs: list[_Output],
                  poll: Callable[[], None]) -> None:
    """Open the videos with the given image or video (streamed), then write each chunk (the model's first frame
    included) as soon as it is denoised, polling for a stop after every step."""
    given, frames_before = None, 0
    if opts.first_frame:
        kept, frames_before = stream_given(opts.first_frame, pipe.size, pipe.model.cfg, pipe.settings.cache,
                                           pipe.codec.temporal, [output.writer for output in outputs], poll,
                                           pipe.sampler.sinks)  # (3, T, H, W)
        for output in outputs:
            output.preview.append(to_uint8(kept[:, -sheet_row(pipe):]))  # a contact sheet row
        given = kept.expand(len(seeds), *kept.shape)  # (B, 3, T, H, W): the same frames for every seed
    keep_every = math.ceil(opts.chunks / PREVIEW_CHUNKS)
    with (tqdm(total=opts.chunks, desc="chunks", unit="chunk", dynamic_ncols=True) as progress,
          tqdm(total=pipe.settings.steps, desc="steps", leave=False, disable=not opts.verbose) as steps):
        def on_step(i: int) -> None:
            steps.update(1)
            poll()

        for chunk in pipe.generate(opts.chunks, label=opts.label, seed=seeds, batch=len(seeds), first_frames=given,
                                   frames_before=frames_before, on_step=on_step, prompt=opts.prompt,
                                   switches=opts.switches, switch_mode=opts.switch_mode):
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


def sheet_row(pipe: Pipeline) -> int:
    """Pixel frames in a row of the contact sheet: those of two chunks after the first frame."""
    return pipe.codec.temporal.pixel_frames(1, 1 + 2 * pipe.model.cfg.chunk_frames)


def _finish(output: _Output, opts: GenerationOptions, row: int, device: torch.device, tic: float) -> dict:
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
        save_contact_sheet(sheet, preview_path(output.path), frames_per_row=row)
        stats["preview"] = str(preview_path(output.path))
    return stats


def write_stats(stats: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), json.dumps(stats, indent=2) + "\n")
