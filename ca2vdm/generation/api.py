"""The Python API: a checkpoint ready to generate (model, codec, recorded sampler settings), and chunks as pixels.

    pipe = ca2vdm.load_pipeline("checkpoints/latent-demo.safetensors")  # its autoencoder, shift 3.0, 16 steps
    ca2vdm.write_video(pipe.generate(10, label=0, seed=0), "out.mp4")   # the mp4 writer of infer/long_video.py
    text = ca2vdm.load_pipeline("checkpoints/text-demo.safetensors")     # prompts; switches between chunks
    ca2vdm.write_video(text.generate(20, prompt="a red circle", switches={10: "a blue square"}), "switch.mp4")

``infer/long_video.py`` (through :func:`ca2vdm.generation.video_files.generate_video`) runs the same loop,
:meth:`Pipeline.generate`, so a video written here is the command line's for the same settings. Frames enter the
model through :func:`model_input` and leave it through :func:`to_pixels`, both through the checkpoint's codec.
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ca2vdm.checkpoints.adapters import LoraSpec, apply_adapters, lora_specs
from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.checkpoints.weights import load_model, metadata_of, weights_file
from ca2vdm.config import SamplerSettings, TemporalCompression, check_seed
from ca2vdm.config.conditioning import check_prompt
from ca2vdm.encoders.codec import Codec, CodecStream, build_codec
from ca2vdm.encoders.text import TextEncoder, build_text_encoder
from ca2vdm.errors import CheckpointError, CodecError, SettingError, opt
from ca2vdm.generation.stream import VideoStream, scheduled
from ca2vdm.generation.wan_base import frame_fields, load_base
from ca2vdm.io.video import VideoWriter, resize_center_crop, to_uint8
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.runtime.device import resolve_device, resolve_dtype
from ca2vdm.sampling.compile import compile_blocks
from ca2vdm.sampling.conditioning import check_kind
from ca2vdm.sampling.pipeline import GenerationState, LongVideoPipeline
from ca2vdm.sampling.step_cache import StepCache

FLOAT_SLACK = 1e-3  # float first frames may leave [-1, 1] by this much (rounding of a conversion)


@dataclass
class Chunk:
    """One chunk of a generated video, as soon as it is denoised."""
    index: int              # 0-based among the chunks asked for; -1: the first frame the model draws before them
    latents: torch.Tensor   # (B, C, L, h, w) in the model's space: pixels in [-1, 1], or the codec's latents
    pixels: np.ndarray      # (B, T, H, W, 3) uint8 RGB, numpy on the CPU (T = codec.temporal's pixel frames of L)
    start_frame: int        # the video's (pixel) frame number of pixels[:, 0] (given first frames count)
    seconds: float          # wall time to denoise and decode it
    model_evals: int        # block-stack evaluations computed (all guidance branches)
    skipped_evals: int      # evaluations a step-caching policy skipped


def load_codec(meta: CheckpointMetadata, checkpoint: str | Path, codec_path: str | None,
               device: torch.device) -> Codec:
    """The codec a checkpoint recorded (pixels when it recorded none). Its autoencoder is looked up at the recorded
    path, then relative to the checkpoint's folder (shipped weights travel together); ``codec_path`` replaces it."""
    recorded = meta.codec
    if recorded.get("kind", "pixel") == "pixel":
        return build_codec(None)
    path = codec_path or recorded.get("path") or ""
    beside = weights_file(checkpoint).parent / path
    found = next((p for p in (Path(path), beside) if p.exists()), None) if path else None
    try:
        return build_codec({**recorded, "path": str(found or path)}, device)
    except CodecError as e:
        looked = f"{path}" + ("" if codec_path or Path(path).is_absolute() else f" (also looked in {beside})")
        raise CodecError(f"checkpoint {checkpoint} decodes through a {recorded.get('class', recorded['kind'])} "
                         f"autoencoder at {looked} that cannot be loaded: {e}. Give {opt('codec_path', 'DIR')} with "
                         "the autoencoder's save_pretrained folder") from None


def pixel_size(model: CausalVideoModel, codec: Codec) -> tuple[int, int]:
    """(height, width) of the video's frames: the model's frame size times the codec's down-sampling."""
    _, height, width = model.frame_shape
    return height * codec.factor, width * codec.factor


def model_input(codec: Codec, pixels: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) pixels in [-1, 1] at :func:`pixel_size` -> the (1, C, T, h, w) frames the model is conditioned
    on: the one place where given frames enter the model."""
    return codec.encode(pixels[None])


def to_pixels(decoder: Codec | CodecStream, frames: torch.Tensor) -> np.ndarray:
    """(B, C, L, h, w) frames -> (B, T, H, W, 3) uint8: the one place where frames leave the model. ``decoder``: a
    codec (the frames are a whole video) or a codec's stream (they are the next chunk of its video)."""
    return np.stack([to_uint8(video) for video in decoder.decode(frames.float())])


class Pipeline:
    """A checkpoint ready to generate: its model, its codec and the sampler settings it recorded (or overrides).

    ``sampler`` is the :class:`~ca2vdm.sampling.pipeline.LongVideoPipeline` (the autoregressive loop in the model's
    space, with the text encoder), ``codec`` turns its frames into pixels, ``size`` is the frames' (height, width) in
    pixels. Made by :func:`load_pipeline` (a checkpoint's file) or :meth:`from_model` (a model in memory); other
    settings on the same model: :meth:`with_settings`.
    """

    def __init__(self, sampler: LongVideoPipeline, codec: Codec, metadata: CheckpointMetadata):
        self.sampler, self.codec, self.metadata = sampler, codec, metadata
        self.size = pixel_size(sampler.model, codec)

    @classmethod
    def from_model(cls, model: CausalVideoModel, metadata: CheckpointMetadata, checkpoint: str | Path,
                   device: torch.device, *, dtype: str | torch.dtype | None = None, codec_path: str | None = None,
                   compile: bool = False, policy: StepCache | None = None, codec: Codec | None = None,
                   text_encoder: TextEncoder | None = None, **settings) -> Pipeline:
        """A model with a checkpoint's metadata (``checkpoints.weights.load_model``, or one being trained) with its
        codec and sampler settings; see :func:`load_pipeline`. The model is moved to ``device`` and cast to ``dtype``
        here (and compiled with ``compile``): the caller hands it over. ``codec`` and ``text_encoder``, when given
        (a base folder's), replace the ones the metadata records."""
        codec = codec or load_codec(metadata, checkpoint, codec_path, device)
        model = model.to(device, resolve_dtype(dtype, device))  # rotary tables and sampler state stay float32
        if compile:
            compile_blocks(model)
        text_encoder = text_encoder or load_text_encoder(model, checkpoint, metadata)
        sampler = LongVideoPipeline.for_checkpoint(model, metadata, text_encoder=text_encoder, policy=policy,
                                                   **settings)
        return cls(sampler, codec, metadata)

    def with_settings(self, **changes) -> Pipeline:
        """This checkpoint (the same model, codec and text encoder) sampled with these settings changed (None
        ignored): one loaded model serves every page of the live demo."""
        return Pipeline(self.sampler.with_settings(**changes), self.codec, self.metadata)

    @property
    def model(self) -> CausalVideoModel:
        return self.sampler.model

    @property
    def settings(self) -> SamplerSettings:
        """The sampler settings in use: the checkpoint's, with the overrides given."""
        return self.sampler.settings

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames to continue -> the (B, C, T, h, w) model frames, on the model's device: uint8 (T, H, W, 3) or
        (B, T, H, W, 3) (any size: resized and centre-cropped to :attr:`size`, as the command line does), or float
        (3, T, H, W) or (B, 3, T, H, W) in [-1, 1] at :attr:`size`. At least one frame (a codec that compresses time:
        1 + 4k, see ``codec.temporal``); finite float values in [-1, 1] (floats in 0 .. 255 are refused, never taken
        as they are: pass such pixels as uint8)."""
        frames, device = torch.as_tensor(frames), self.model.device
        if frames.dtype == torch.uint8:
            rows = frames[None] if frames.ndim == 4 else frames
            if rows.ndim != 5 or rows.shape[-1] != 3:
                raise SettingError("first_frames", f"uint8 {tuple(frames.shape)}",
                                   "uint8 frames must be (T, H, W, 3) or (B, T, H, W, 3)")
            _check_not_empty(rows.shape[:2], frames)
            _check_whole(rows.shape[1], self.codec.temporal, frames)
            return self.codec.encode(torch.stack([resize_center_crop(row, self.size) for row in rows]).to(device))
        video = frames[None] if frames.ndim == 4 else frames
        if not frames.is_floating_point() or video.ndim != 5 or video.shape[1] != 3 or video.shape[3:] != self.size:
            raise SettingError("first_frames", f"{frames.dtype} {tuple(frames.shape)}",
                               f"expected uint8 (B, T, H, W, 3) frames or float (B, 3, T, {self.size[0]}, "
                               f"{self.size[1]}) in [-1, 1]")
        _check_not_empty((video.shape[0], video.shape[2]), frames)
        _check_whole(video.shape[2], self.codec.temporal, frames)
        _check_float_range(video)
        return self.codec.encode(video.to(device))

    def generate(self, num_chunks: int | None = None, *, label: int | None = None, seed: int | list[int] = 0,
                 first_frames: np.ndarray | torch.Tensor | None = None, batch: int = 1, frames_before: int = 0,
                 on_step: Callable[[int], None] | None = None, prompt: str | None = None,
                 switches: dict[int, str | int] | None = None, switch_mode: str = "recache") -> VideoStream:
        """Yield ``num_chunks`` chunks (None: until the caller stops iterating), each as soon as it is denoised.

        Nothing runs before the first ``next`` (bad arguments are refused at once), and nothing after the last
        chunk taken: breaking out of the loop (or closing the generator) stops it between chunks. Without
        ``first_frames`` a model that draws its first frame yields it first, as chunk -1 (not counted in
        ``num_chunks``); given ``first_frames`` (see :meth:`encode`) are conditioned on and not yielded; their ``B``
        replaces ``batch``. ``seed``: one seed, or one per video (each video's noise from its own seed, so a video
        equals the same seed's video made alone). ``frames_before``: see :meth:`LongVideoPipeline.start`.
        ``on_step(i)`` is called after every denoising step (raise in it to stop mid-chunk).

        ``prompt``: a text model's prompt (``label``: a label model's). ``switches``: {chunk index: new prompt (a
        str) or label (an int)}, each applied just before its chunk with ``switch_mode`` (recache | keep | reset,
        :meth:`LongVideoPipeline.switch`); the returned :class:`~ca2vdm.generation.stream.VideoStream` also takes
        ``switch(prompt=... | label=..., at=...)`` between chunks.
        """
        if num_chunks is not None and (isinstance(num_chunks, bool) or not isinstance(num_chunks, int)
                                       or num_chunks < 1):
            raise SettingError("num_chunks", num_chunks, "must be a whole number >= 1 (or None for no end)")
        for one in seed if isinstance(seed, list) else [seed]:
            check_seed(one)
        if frames_before and self.codec.temporal.frames_per_latent > 1:
            raise SettingError("frames_before", frames_before, "must be 0 with a codec that compresses time: it "
                               "encodes a video from its first frame, so give the whole video")
        prompt = None if prompt is None else check_prompt(prompt)
        check_kind(self.model, label, prompt)
        if prompt is not None and self.sampler.text_encoder is not None:
            self.sampler.text_encoder.encode(prompt)  # an over-long prompt is refused now (and kept encoded)
        start = dict(label=label, prompt=prompt, seed=seed, frames_before=frames_before)
        return VideoStream(self.sampler, lambda stream: self._chunks(stream, num_chunks, start, first_frames, batch,
                                                                      on_step), num_chunks,
                           scheduled(switches, switch_mode))

    def _chunks(self, stream: VideoStream, num_chunks: int | None, start: dict,
                first_frames: np.ndarray | torch.Tensor | None, batch: int,
                on_step: Callable[[int], None] | None) -> Iterator[Chunk]:
        given = None if first_frames is None else self.encode(first_frames)
        batch = batch if given is None else given.shape[0]
        state = self.sampler.start(batch=batch, first_frames=given, **start)
        decoder = self.codec.stream()  # this video's decoding state (a causal video codec's cache)
        if given is not None:
            decoder.skip(given)
        if given is None and self.model.cfg.first_frame_chunk:  # the model draws the first frame itself
            yield self._next(state, decoder, -1, on_step)
        for index in itertools.count() if num_chunks is None else range(num_chunks):
            stream.before(state, index)
            chunk = self._next(state, decoder, index, on_step)
            stream.after(index)
            yield chunk

    def _next(self, state: GenerationState, decoder: CodecStream, index: int,
              on_step: Callable[[int], None] | None) -> Chunk:
        tic, start_frame = time.perf_counter(), self.codec.temporal.start_of(state.frames)
        result = self.sampler.next_chunk(state, on_step=on_step)
        pixels = to_pixels(decoder, result.frames)
        return Chunk(index, result.frames, pixels, start_frame, time.perf_counter() - tic, result.model_evals,
                     result.skipped_evals)


def load_text_encoder(model: CausalVideoModel, checkpoint: str | Path,
                      metadata: CheckpointMetadata | None = None) -> TextEncoder | None:
    """The text encoder a text model's checkpoint records (``model.text_encoder``; a folder is also looked up beside
    the checkpoint); None for other models. With the words of the model's training captions (``metadata``), it says
    once per prompt which of its words the model never saw."""
    cfg = model.cfg
    if cfg.text_encoder.startswith("umt5"):
        raise CheckpointError(f"{checkpoint} reads prompts through Wan's UMT5 ({cfg.text_encoder}): give the Wan "
                              f"folder it goes with as {opt('base')} (its text_encoder/, tokenizer/ and vae/)")
    encoder = build_text_encoder(cfg.text_encoder, cfg.text_tokens, weights_file(checkpoint).parent)
    if encoder is not None and metadata is not None and metadata.caption_words is not None:
        encoder.seen_words = frozenset(metadata.caption_words)
    return encoder


def _check_not_empty(batch_and_frames: tuple[int, int], frames: torch.Tensor) -> None:
    if 0 in batch_and_frames:
        raise SettingError("first_frames", f"{frames.dtype} {tuple(frames.shape)}",
                           "holds no frames (B or T is 0); give at least one frame, or no first_frames")


def _check_whole(count: int, temporal: TemporalCompression, frames: torch.Tensor) -> None:
    """A codec that compresses time encodes the first frame alone, then whole groups of frames."""
    whole = temporal.start_of(temporal.latents_in(count))
    if whole != count:
        group = temporal.frames_per_latent
        raise SettingError("first_frames", f"{frames.dtype} {tuple(frames.shape)}",
                           f"holds {count} frames, but the codec encodes the first frame alone, then groups of "
                           f"{group}: give 1 + {group}k frames (e.g. the first {whole})")


def _check_float_range(video: torch.Tensor) -> None:
    """Float frames hold finite values in [-1, 1] (pixels in 0 .. 255 passed as floats are refused)."""
    if not torch.isfinite(video).all():
        raise SettingError("first_frames", f"{video.dtype} {tuple(video.shape)}",
                           "holds NaN or infinite values; give finite values in [-1, 1]")
    low, high = video.min().item(), video.max().item()
    if low < -1 - FLOAT_SLACK or high > 1 + FLOAT_SLACK:
        raise SettingError("first_frames", f"{video.dtype} values {low:g} .. {high:g}",
                           "float frames must be in [-1, 1]; pass pixels in 0 .. 255 as uint8 (converted as the "
                           "command line does), or scale them: x / 127.5 - 1")


def load_pipeline(path: str | os.PathLike | None = None, device: str | torch.device | None = None, *,
                  checkpoint: str | os.PathLike | None = None, base: str | os.PathLike | None = None,
                  size: tuple[int, int] | None = None, offload_text_encoder: bool = False,
                  dtype: str | torch.dtype | None = None, codec_path: str | None = None, compile: bool = False,
                  policy: StepCache | None = None, lora: LoraSpec | Iterable[LoraSpec] | None = None,
                  **settings) -> Pipeline:
    """Load a checkpoint (weights ``.safetensors`` or a training checkpoint directory) as ``infer/long_video.py`` does.

    ``path`` (or ``checkpoint=``): the checkpoint. ``base``: a downloaded Wan 2.1 folder (diffusers' or Wan's own
    layout) whose VAE, UMT5 text encoder and tokenizer are used with the checkpoint's transformer, which may then be
    another project's weights (a Self-Forcing / CausVid / Causal Forcing / LongLive ``.pt``, a Wan or diffusers folder;
    sampled as the known-model table of :mod:`ca2vdm.config.presets` says) or None for the folder's own
    (:mod:`ca2vdm.generation.wan_base`); ``offload_text_encoder`` keeps UMT5 on the CPU except while it encodes a
    prompt. ``size``: (height, width) of the frames in pixels, for a Wan model (default: the checkpoint's own; 480x832
    for another project's).

    ``device``: None or "auto" picks CUDA when there is one, else the CPU. ``dtype`` of the weights and KV cache
    (fp32, bf16, fp16 or a torch dtype): None is bf16 on CUDA and fp32 on the CPU, as on the command line. The codec
    (pixels, or the autoencoder the checkpoint recorded, looked up beside it; ``codec_path`` replaces it) and the
    sampler settings (:class:`~ca2vdm.config.SamplerSettings`) come from the checkpoint; ``settings`` override them by
    name (``steps=8``, ``shift=3.0``, ``cfg_scale``, ``cond_noise``, ``cache`` kv | none | full,
    ``step_cache_options``, ``step_cache``: a name of ``ca2vdm.config.STEP_CACHE_NAMES``, i.e. none, teacache,
    magcache, taylorseer, chunkcache, fastercache, adacache, with its settings in ``step_cache_options``, e.g.
    ``{"interval": 2}``). ``policy``: an expert's :class:`~ca2vdm.sampling.step_cache.StepCache` object instead of the
    ``step_cache`` setting. ``compile``: the blocks are compiled on first use. ``lora``: LoRA
    adapters trained on this checkpoint (a run's ``adapter.safetensors`` or its checkpoint folder), a path or
    ``(path, scale)`` or a list of them, folded into the loaded weights, each times its scale (stacked); an adapter
    trained on another checkpoint is refused (:mod:`ca2vdm.checkpoints.adapters`); with ``base``, LongLive's
    ``lora.pt`` too.
    """
    if path is not None and checkpoint is not None:
        raise SettingError("checkpoint", checkpoint, f"and the path {path} both name the checkpoint; give one")
    path = checkpoint if path is None else path
    if base is None and offload_text_encoder:
        raise SettingError("offload_text_encoder", True, f"applies to a Wan folder's UMT5 text encoder: give "
                           f"{opt('base')} too")
    lora = lora_specs(lora)  # checked before the weights load
    device = resolve_device(device)
    if base is not None:
        parts = load_base(base, path, device, dtype=dtype, size=size, offload_text_encoder=offload_text_encoder,
                          lora=lora)
        return Pipeline.from_model(parts.model, parts.metadata, path or base, device, dtype=dtype, compile=compile,
                                   policy=policy, codec=parts.codec, text_encoder=parts.text_encoder, **settings)
    meta = metadata_of(path) if size is not None else None
    fields = frame_fields(meta.model, size, meta.codec.get("factor", 1)) if meta is not None else None
    model, meta = load_model(path, device, overrides=fields)
    model = apply_adapters(model, lora, path)  # the model is this function's own: merged in place
    return Pipeline.from_model(model, meta, path, device, dtype=dtype, codec_path=codec_path, compile=compile,
                               policy=policy, **settings)


def write_video(chunks: Iterable[Chunk], path: str | os.PathLike, fps: int = 8, *, row: int = 0,
                overwrite: bool = False) -> int:
    """Write the chunks' pixels (row ``row`` of each batch) to the mp4 ``path`` with the command line's writer
    (:class:`~ca2vdm.io.video_writer.VideoWriter`: atomic, H.264); return the number of frames written.

    An existing ``path`` is refused unless ``overwrite``, and a folder, device, pipe or socket always (SettingError
    before anything is written). If iterating ``chunks`` raises (Ctrl-C, an error), the finished chunks are kept as
    a playable mp4 and the exception propagates. To append chunk by chunk, use ``VideoWriter(path, fps)`` directly:
    ``writer.write(chunk.pixels[row])``, then ``writer.close()``.
    """
    writer = VideoWriter(path, fps=fps, overwrite=overwrite)
    try:
        for chunk in chunks:
            writer.write(chunk.pixels[row])
    except BaseException:
        if writer.frames_written:
            writer.close()
        else:
            writer.abort()
        raise
    writer.close()
    return writer.frames_written
