"""What ``train/train.py`` trains: the causal video DiT with the flow-matching losses, on videos or latent shards."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ca2vdm.checkpoints import weights as ckpt
from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.config import Config, SamplerSettings
from ca2vdm.config.conditioning import caption_words
from ca2vdm.data.captions import find_captions
from ca2vdm.data.clips import DEFAULT_MANIFEST, VideoFolderDataset
from ca2vdm.data.latents import LatentClipDataset
from ca2vdm.encoders.codec import build_codec, check_model_fits
from ca2vdm.encoders.text import TextEmbeddings, build_text_encoder
from ca2vdm.errors import CheckpointError, ConfigError, DataError
from ca2vdm.io.video import to_uint8
from ca2vdm.models.registry import build_model
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.training import checkpoint_dirs
from ca2vdm.training.ema import EMA
from ca2vdm.training.export import check_training_weights
from ca2vdm.training.losses import causal_flow_loss, teacher_forcing_flow_loss
from ca2vdm.training.rollout import rollout_context
from ca2vdm.training.samples import write_sample

TEXT_MODULES = ("text_embedder.", ".cross.")  # what a text model adds to a label model of the same sizes


def load_initial(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``train.init_from``: the weights of ``source`` into ``model``. A text model may start from a label (or
    unconditional) model of the same sizes: its text modules start fresh and the label table is left out."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    text_from_labels = missing and all(any(m in k for m in TEXT_MODULES) for k in missing) and all(
        k.startswith("y_embedder.") for k in extra)
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in own} if text_from_labels else state,
                              strict=not text_from_labels)
    except RuntimeError as e:  # tensors of another shape or set: the checkpoint is fine, the pairing is not
        raise CheckpointError(f"train.init_from={source} does not fit this model config "
                              f"({str(e).strip().splitlines()[-1].strip()}); use the model config it was trained "
                              "with (its sizes, depth and num_classes)") from None


def chunk_weights(chunks: list[tuple[int, int]], contiguous: torch.Tensor, model_cfg) -> torch.Tensor:
    """(B, K) 0/1 for a model with sinks: which chunk k of which clip b carries loss. A chunk whose context does not
    fill the KV cache's window is, at inference, one of a video's first chunks, right after the sinks: it is trained
    only on clips that show that (``contiguous``, ``ca2vdm.data.clips.CONTIGUOUS_SHARE``), never after a gap the
    positions cannot show (the model would learn the blurred average over every distance). This includes the first-frame
    chunk, which would be valid in any clip: it keeps half of its samples."""
    full = torch.tensor([start >= model_cfg.max_context_frames for start, _ in chunks], device=contiguous.device)
    return (contiguous.bool()[:, None] | full[None]).float()  # (B, K)


class DiffusionTask:
    """What :func:`train` trains by default: the causal video DiT on clips that cross into the model's space through
    the codec (``codec`` section), or on latents encoded once (``data.latents``). A task supplies the data, the
    model, the loss, the published weights and the periodic samples; the loop, checkpoints and resume are shared
    (``ca2vdm.training.autoencoder.AutoencoderTask`` trains our own autoencoder with the same loop)."""

    def __init__(self, config: Config, device: torch.device):
        self.codec = build_codec(config.codec, device)
        check_model_fits(self.codec, config.model.in_channels)
        if self.codec.temporal.frames_per_latent > 1:
            raise ConfigError(f"codec.path={config.codec.path} compresses time ({self.codec.metadata()['class']}: "
                              "the first frame alone, then groups of frames); training through it is not supported: "
                              "train on pixels or a per-frame autoencoder")
        self.chunks = config.model.layout.clip_chunks(config.model.clip_frames)
        mc = config.model
        self.text_encoder = build_text_encoder(mc.text_encoder, mc.text_tokens)
        self.caption_words: list[str] | None = None  # a text model's training captions' words (set with its data)
        if self.text_encoder is not None:  # the width of the encoder's vectors is recorded with the model
            if mc.text_dim not in (0, self.text_encoder.dim):
                raise ConfigError(f"model.text_dim={mc.text_dim} but model.text_encoder={mc.text_encoder} gives "
                                  f"vectors of {self.text_encoder.dim}; set model.text_dim={self.text_encoder.dim} "
                                  "(or 0: the encoder's)")
            mc.text_dim = self.text_encoder.dim

    def check_resume(self, path: Path, config: Config) -> None:
        """The model config and the codec (the space the weights work in) cannot change on resume."""
        check_training_weights(path, "model_config")
        checkpoint_dirs.check_compatible(path, config.model)
        recorded = ckpt.metadata_of(path).codec
        current = self.codec.metadata()
        if any(recorded.get(k) != current.get(k) for k in ("kind", "path", "scaling_factor", "shift_factor")):
            raise CheckpointError(f"checkpoint {path} was trained with codec {dict(recorded)}, the config's codec is "
                                  f"{current}; resume with the codec it was trained with")

    def dataset(self, config: Config) -> VideoFolderDataset | LatentClipDataset:
        mc, dc, seed = config.model, config.data, config.train.seed
        if dc.latents:
            dataset = LatentClipDataset(dc.latents, mc.clip_frames, dc.frame_stride, seed, dc.clips_per_video,
                                        mc.sink_frames)
            dataset.check_fits(mc.in_channels, mc.resolution, self.codec.metadata())
            dataset.check_text(mc)
        else:  # frames are decoded at the codec's pixel size and encoded on the training device
            captions = find_captions(Path(dc.root), dc.captions) if self.text_encoder is not None else None
            dataset = VideoFolderDataset(dc.root, num_frames=mc.clip_frames, frame_stride=dc.frame_stride,
                                         resolution=mc.resolution * self.codec.factor, manifest=dc.manifest, seed=seed,
                                         clips_per_video=dc.clips_per_video, report_skipped=False,
                                         sink_frames=mc.sink_frames, captions=captions,
                                         caption_problem=self.text_encoder.problem if self.text_encoder else None)
        where = dc.latents or dc.root
        if self.text_encoder is not None:  # recorded in the checkpoints: generation names a prompt's unseen words
            captions = dataset.captions if not dc.latents else [v.get("caption", "") for v in dataset.entries]
            self.caption_words = caption_words(captions)
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
        model = build_model(config.model)
        init_from = config.train.init_from
        if init_from and not resume:
            load_initial(model, ckpt.load_model(init_from)[0].state_dict(), init_from)
        return model

    def prompts(self, batch: dict, config: Config, gen: torch.Generator) -> TextEmbeddings | None:
        """A text model's prompts of a batch (encoded now, or stored with latents), each replaced by the empty prompt
        with probability ``diffusion.caption_dropout`` (guidance's unconditional branch); None for other models."""
        if self.text_encoder is None:
            return None
        text = TextEmbeddings(batch["text"], batch["text_mask"]) if "text" in batch else \
            self.text_encoder.encode(list(batch["caption"]))
        keep = torch.rand(len(text), generator=gen, device=gen.device) >= config.diffusion.caption_dropout  # (B,)
        keep = keep.to(text.tokens.device)
        return TextEmbeddings(text.tokens * keep[:, None, None], text.mask & keep[:, None]).to(gen.device)

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
        text = self.prompts(batch, config, gen)
        weight = chunk_weights(self.chunks, batch["contiguous"].to(gen.device), mc) if mc.sink_frames else None
        if dc.objective == "all":
            context = self.own_context(model, video, labels, self.chunks[-1][0], config, gen, text)
            return teacher_forcing_flow_loss(model, video, labels, self.chunks, dc.cond_noise, generator=gen,
                                             context=context, weight=weight, text=text)
        k = int(torch.randint(len(self.chunks), (1,), generator=gen, device=gen.device))
        start, length = self.chunks[k]
        context = self.own_context(model, video, labels, start, config, gen, text)
        return causal_flow_loss(model, video, labels, start, length, dc.cond_noise, generator=gen, context=context,
                                weight=None if weight is None else weight[:, k], text=text)

    def own_context(self, model, video: torch.Tensor, labels: torch.Tensor | None, num_cond: int, config: Config,
                    gen: torch.Generator, text: TextEmbeddings | None = None) -> torch.Tensor | None:
        """For a share ``diffusion.self_rollout`` of the steps, the clip with its first ``num_cond`` frames (after
        the given ones) made by the model itself (:mod:`ca2vdm.training.rollout`); otherwise None (real context). Draws
        nothing from ``gen`` when self-rollout is off, so such runs are unchanged."""
        dc = config.diffusion
        if not dc.self_rollout or torch.rand((), generator=gen, device=gen.device) >= dc.self_rollout:
            return None
        seed = int(torch.randint(2**62, (), generator=gen, device=gen.device))
        return rollout_context(getattr(model, "module", model), video, labels, num_cond, start_t=dc.rollout_t,
                               steps=dc.rollout_steps, shift=dc.shift, cond_noise=dc.cond_noise, seed=seed,
                               pixel_space=self.codec.pixel_space, text=text)

    def save_weights(self, directory: Path, ema: EMA, config: Config, step: int) -> None:
        provenance = {"diffusion_config": dataclasses.asdict(config.diffusion),
                      "train_config": dataclasses.asdict(config.train)}
        meta = CheckpointMetadata(config.model, config.diffusion.sampler(), self.codec.metadata(), step=step,
                                  caption_words=self.caption_words, raw=provenance)
        ckpt.save_weights(directory / ckpt.WEIGHTS_NAME, ema.shadow, config.model, meta.entries())

    def sample(self, ema: EMA, config: Config, out: Path, step: int, chunks: int = 4) -> None:
        """A short video from the EMA weights, decoded through the codec (:func:`write_sample`)."""
        model = build_model(config.model).to(next(iter(ema.shadow.values())).device)
        model.load_state_dict(ema.shadow)
        settings = SamplerSettings(steps=config.diffusion.steps, shift=config.diffusion.shift,
                                   cond_noise=config.diffusion.cond_noise)
        pipe = LongVideoPipeline(model, settings, pixel_space=self.codec.pixel_space)
        label = 0 if config.model.num_classes else None
        made, decoder = pipe.generate(chunks, label=label, seed=0), self.codec.stream()
        write_sample((to_uint8(decoder.decode(chunk.frames)[0]) for chunk in made), out, step)
