"""Long-video generation to a file: load a checkpoint, stream chunks into an mp4, report per-chunk cost.

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
import os
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

from .checkpoint import load_model, weights_file
from .codec import Codec, CodecError, build_codec
from .compile import warm_up
from .config import ModelConfig
from .output_paths import VIDEO_NAME, check_paths, output_path, preview_path  # noqa: F401 (VIDEO_NAME: the CLI's)
from .pipeline import ChunkResult, GenerationState, LongVideoPipeline
from .precision import dtype_name, resolve_dtype
from .step_cache import build_step_cache
from .video_io import VideoWriter, save_contact_sheet, stream_video, to_uint8

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "demo.safetensors"
DEFAULT_OUT = Path("outputs") / "long_video.mp4"  # the CLI's scratch output, replaced by every run
PREVIEW_CHUNKS = 20     # chunks shown in the contact sheet, evenly spaced
PREVIEW_PIXELS = 128    # thumbnails are upscaled (nearest, by a whole factor) to about this size to be visible
SEED_MAX = 2 ** 64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    step_cache: str = "none"        # none | teacache | fastercache | adacache
    teacache_thresh: float = 0.1
    fps: int = 8
    preview: bool = False
    verbose: bool = False
    overwrite: bool = False         # replace an existing output video (and its contact sheet)
    stats: str | None = None        # JSON file for the stats (replaced if it exists)
    codec_path: str | None = None   # the autoencoder's folder, when not where the checkpoint recorded it
    compile: bool = False           # compile the blocks once per process (ca2vdm.compile); seconds in the stats


class Stopped(KeyboardInterrupt):
    """generate_video was stopped by ``signum``. ``stats`` describes the finished chunks, kept as a playable mp4
    (``stats["video"]``), or is None when it stopped before the first chunk was finished (nothing written)."""

    def __init__(self, signum: int, stats: dict | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stats = signum, stats


class StopSignals:
    """``with StopSignals() as stop``: SIGINT and SIGTERM request a stop instead of ending the process at once.

    ``generate_video(..., stop=stop)`` polls it after every denoising step and decoded batch, so a chunk is never cut
    in half in the file. Signals the process was started to ignore stay ignored; the old handlers come back on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            if self._previous[sig] is not signal.SIG_IGN:
                signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler or signal.SIG_DFL)  # None: a handler not set from Python

    def _request(self, signum: int, frame) -> None:
        self.signum = self.signum or signum

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.signum is not None:
            raise KeyboardInterrupt(signal.Signals(self.signum).name)


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


def load_codec(meta: dict, checkpoint: str | Path, codec_path: str | None, device: torch.device) -> Codec:
    """The codec a checkpoint recorded (pixels when it recorded none). Its autoencoder is looked up at the recorded
    path, then relative to the checkpoint's folder (shipped weights travel together); ``codec_path`` replaces it."""
    recorded = meta.get("codec") or {"kind": "pixel"}
    if recorded["kind"] == "pixel":
        return build_codec(None)
    path = codec_path or recorded.get("path") or ""
    beside = weights_file(checkpoint).parent / path
    found = next((p for p in (Path(path), beside) if p.exists()), None) if path else None
    try:
        return build_codec({**recorded, "path": str(found or path)}, device)
    except CodecError as e:
        looked = f"{path}" + ("" if codec_path or Path(path).is_absolute() else f" (also looked in {beside})")
        raise CodecError(f"checkpoint {checkpoint} decodes through a {recorded.get('class', recorded['kind'])} "
                         f"autoencoder at {looked} that cannot be loaded: {e}. Pass --codec-path DIR with the "
                         "autoencoder's save_pretrained folder") from None


def pixel_size(pipe: LongVideoPipeline, codec: Codec) -> int:
    """Height and width of the video's frames: the model's resolution times the codec's down-sampling."""
    return pipe.model.cfg.resolution * codec.factor


def model_input(codec: Codec, pixels: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) pixels in [-1, 1] at :func:`pixel_size` -> the (1, C, T, h, w) frames the model is conditioned
    on: the one place where given frames enter the model."""
    return codec.encode(pixels[None])


def model_output(codec: Codec, frames: torch.Tensor) -> list[np.ndarray]:
    """A chunk's (B, C, L, h, w) frames -> per video (L, H, W, 3) uint8: the one place where frames leave the model."""
    return [to_uint8(video) for video in codec.decode(frames.float())]


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
    out = output_path(out)
    check_options(opts)
    check_paths(checkpoint, out, opts)
    pipe, codec, compile_seconds = load_pipeline(checkpoint, opts)
    try:
        stats = generate_batch(pipe, codec, {opts.seed: out}, opts, stop,
                               {"checkpoint": str(checkpoint), "compile_seconds": compile_seconds})[0]
    except Stopped as stopped:
        if stopped.stats and opts.stats:
            write_stats(stopped.stats[0], opts.stats)
        raise Stopped(stopped.signum, stopped.stats[0] if stopped.stats else None) from None
    if opts.stats:
        write_stats(stats, opts.stats)
    return stats


def load_pipeline(checkpoint: str | Path, opts: GenerationOptions, batch: int = 1) -> tuple[LongVideoPipeline, Codec,
                                                                                          float | None]:
    """The pipeline and codec ``opts`` ask for; with ``opts.compile`` the blocks are compiled now, for ``batch``
    videos at a time (their seconds are returned, else None)."""
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    model, meta = load_model(checkpoint, device)
    codec = load_codec(meta, checkpoint, opts.codec_path, device)
    check_label(opts.label, model.cfg.num_classes)
    model = model.to(dtype)  # weights and KV cache; rotary tables and softmax statistics stay float32
    step_cache = build_step_cache(opts.step_cache, opts.teacache_thresh, meta.get("teacache_coefficients"))
    pipe = LongVideoPipeline.from_metadata(model, meta, steps=opts.steps, shift=opts.shift, cfg_scale=opts.cfg_scale,
                                           cache_mode=opts.cache, step_cache=step_cache, compile=opts.compile)
    return pipe, codec, warm_up(pipe, batch, opts.label) if opts.compile else None


def generate_batch(pipe: LongVideoPipeline, codec: Codec, outs: dict[int, Path], opts: GenerationOptions,
                   stop: StopSignals | None = None, extra_stats: dict | None = None) -> list[dict]:
    """Generate one video per seed of ``outs`` (seed -> mp4 path, already checked), all in one batch; return their
    stats (each starting with ``extra_stats``). Each video's noise comes from its own seed's generator, so it equals
    the video generated alone. On a stop, raises :class:`Stopped` whose ``stats`` lists the videos' stats after
    keeping their finished chunks (None: nothing was finished)."""
    poll = stop.check if stop is not None else lambda: None
    device = pipe.model.x_embedder.weight.device
    outputs = []
    for seed, path in outs.items():
        stats = {**(extra_stats or {}), "video": str(path), "seed": seed, "chunks": [], "frames": 0,
                 "cache": opts.cache, "steps": pipe.steps, "shift": pipe.shift, "cfg_scale": pipe.cfg_scale,
                 "step_cache": opts.step_cache, "device": str(device),
                 "dtype": dtype_name(pipe.model.x_embedder.weight.dtype)}
        outputs.append(_Output(path, VideoWriter(path, fps=opts.fps), stats))
    tic = time.perf_counter()
    try:
        state = _first_frames(pipe, opts, list(outs), codec, outputs, poll)
        _chunks(pipe, state, opts, codec, outputs, poll)
    except KeyboardInterrupt:
        signum = getattr(stop, "signum", None) or signal.SIGINT  # a plain KeyboardInterrupt: Ctrl-C
        if not outputs[0].stats["chunks"]:
            for output in outputs:
                output.writer.abort()
            raise Stopped(signum, None) from None
        for output in outputs:
            output.stats["stopped_by"] = signal.Signals(signum).name
        raise Stopped(signum, [_finish(output, opts, pipe.model.cfg, device, tic) for output in outputs]) from None
    except BaseException:
        for output in outputs:
            output.writer.abort()
        raise
    return [_finish(output, opts, pipe.model.cfg, device, tic) for output in outputs]


def _first_frames(pipe: LongVideoPipeline, opts: GenerationOptions, seeds: list[int], codec: Codec,
                  outputs: list[_Output], poll: Callable[[], None]) -> GenerationState:
    """Start the videos with the given image or video (streamed) or, for a first-frame-chunk model, a frame it
    draws."""
    if opts.first_frame:
        kept, frames_before = _copy_given(pipe, opts.first_frame, codec, outputs, poll)
        for output in outputs:
            output.preview.append(to_uint8(kept[:, -2 * pipe.model.cfg.chunk_frames:]))  # a contact sheet row
        first = model_input(codec, kept)  # (1, C, T, h, w)
        return pipe.start(batch=len(seeds), label=opts.label, seed=seeds, frames_before=frames_before,
                          first_frames=first.expand(len(seeds), *first.shape[1:]))
    state = pipe.start(batch=len(seeds), label=opts.label, seed=seeds)
    if pipe.model.cfg.first_frame_chunk:  # the model draws the first frame itself
        images = model_output(codec, pipe.next_chunk(state, on_step=lambda i: poll()).frames)
        for output, image in zip(outputs, images):
            output.writer.write(image)
            output.preview.append(image)
    return state


def _copy_given(pipe: LongVideoPipeline, path: str, codec: Codec, outputs: list[_Output],
                poll: Callable[[], None]) -> tuple[torch.Tensor, int]:
    """Stream a given image or video into the outputs at the model's resolution, holding only the frames that can
    still influence the next chunk; return those (3, T, H, W), the attention sinks first, and how many frames came
    before the others."""
    cfg = pipe.model.cfg
    most = _reach(cfg) + cfg.chunk_frames - 1  # the most frames conditioning_start keeps
    kept: deque[torch.Tensor] = deque(maxlen=None if pipe.cache_mode == "full" else most)
    sinks: list[torch.Tensor] = []
    total = 0
    for pixels in stream_video(path, size=pixel_size(pipe, codec)):  # (3, T, H, W) batches
        poll()
        for output in outputs:
            output.writer.write(to_uint8(pixels))
        frames = pixels.unbind(1)
        sinks += frames[:cfg.sink_frames - len(sinks)]
        kept.extend(frames)
        total += pixels.shape[1]
    start = conditioning_start(pipe, total)
    return torch.stack((sinks if start else []) + list(kept)[start - total:], dim=1), start


def _chunks(pipe: LongVideoPipeline, state: GenerationState, opts: GenerationOptions, codec: Codec,
            outputs: list[_Output], poll: Callable[[], None]) -> None:
    """Generate the chunks, writing each to the videos as soon as it is denoised."""
    keep_every = math.ceil(opts.chunks / PREVIEW_CHUNKS)
    with tqdm(total=opts.chunks, desc="chunks", unit="chunk", dynamic_ncols=True) as progress:
        for index in range(opts.chunks):
            tic = time.perf_counter()
            chunk = _denoise(pipe, state, index, opts.verbose, poll)
            videos = model_output(codec, chunk.frames)
            seconds = time.perf_counter() - tic
            for output, frames in zip(outputs, videos):
                output.writer.write(frames)
                output.stats["chunks"].append({"index": index, "seconds": seconds, "model_evals": chunk.model_evals,
                                               "skipped_evals": chunk.skipped_evals})
                if opts.preview and index % keep_every == 0:
                    output.preview.append(frames)
            progress.update(1)


def _denoise(pipe: LongVideoPipeline, state: GenerationState, index: int, verbose: bool,
             poll: Callable[[], None]) -> ChunkResult:
    """The next chunk (a progress bar per step if ``verbose``), polling for a stop after every step."""
    with tqdm(total=pipe.steps, desc=f"chunk {index}", leave=False, disable=not verbose) as steps:
        def on_step(i: int) -> None:
            steps.update(1)
            poll()

        return pipe.next_chunk(state, on_step=on_step)


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
