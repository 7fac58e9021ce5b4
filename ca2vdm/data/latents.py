"""Latents computed once: a video folder encoded into safetensors shards, and the dataset that trains from them.

Layout of a latent directory (written by ``ca2vdm encode-latents``, see :mod:`ca2vdm.data.latent_encoding`)::

    index.json            codec metadata, pixel and latent size, labels, and where each video's latents live
    shard_<rank>-<n>.safetensors  ...  one (C, T, h, w) float16 tensor per video, every frame of it (and for a text
                                       model its caption's token vectors, (text_tokens, text_dim), key + ".text")

Whole videos are stored, not fixed clips, so training draws a new clip position every epoch exactly as the video
dataset does (same seed -> same positions); no video is decoded and no autoencoder runs while training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from ca2vdm.data.clips import ClipDataset
from ca2vdm.errors import DataError

INDEX_NAME = "index.json"
TEXT_SUFFIX = ".text"  # a video's caption vectors, beside its latents (a text model's latents)


def read_index(root: str | os.PathLike) -> dict:
    """The index of a latent directory, with a clear error when it is not one."""
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise DataError(f"data.latents={root} holds no {INDEX_NAME}; write it with ca2vdm encode-latents "
                        f"--config CONFIG --out {root}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path} cannot be read ({error}); re-encode with ca2vdm encode-latents") from None


class LatentClipDataset(ClipDataset):
    """Clips of ``num_frames`` latent frames (every ``frame_stride``-th) from an encoded latent directory.

    Same item contract and clip positions as :class:`~ca2vdm.data.VideoFolderDataset`: {"video": (C, T, h, w)
    float32 latents, "label": long, "contiguous": bool}; the start of item i is a function of (seed, epoch, i).
    """

    def __init__(self, root: str | os.PathLike, num_frames: int, frame_stride: int = 1, seed: int = 0,
                 clips_per_video: int = 1, sink_frames: int = 0):
        self.root = Path(root)
        self.index = read_index(root)
        self.num_frames, self.frame_stride, self.seed, self.sink_frames = num_frames, frame_stride, seed, sink_frames
        self.clips_per_video, self.epoch = clips_per_video, 0
        self.clip_span = (num_frames - 1) * frame_stride + 1
        self.entries = [v for v in self.index["videos"] if v["frames"] >= self.clip_span]
        self.skipped = [tuple(s) for s in self.index["skipped"]] + [
            (v["file"], f"too short: {v['frames']} frames, a clip needs {self.clip_span}")
            for v in self.index["videos"] if v["frames"] < self.clip_span]
        self.videos = [v["file"] for v in self.entries]
        self.labels = [v["label"] for v in self.entries]
        self.num_classes, self.manifest = self.index["num_classes"], self.index.get("manifest")
        if not self.entries:
            raise DataError(f"no latent video in {self.root} has the {self.clip_span} frames a clip needs "
                            f"({len(self.index['videos'])} encoded)")

    def check_fits(self, channels: int, resolution: int, codec_metadata: dict) -> None:
        """The latents must be what the model and codec of the config expect."""
        ix = self.index
        if (ix["channels"], ix["resolution"]) != (channels, resolution):
            raise DataError(f"latents in {self.root} are {ix['channels']} channels x {ix['resolution']}^2 but the "
                            f"model expects {channels} x {resolution}^2; set model.in_channels and model.resolution "
                            "to match, or re-encode")
        recorded = {k: ix["codec"].get(k) for k in ("kind", "path", "scaling_factor", "shift_factor")}
        wanted = {k: codec_metadata.get(k) for k in recorded}
        if recorded != wanted:
            raise DataError(f"latents in {self.root} were encoded with codec {recorded}, the config's codec is "
                            f"{wanted}; set the codec section to the one used, or re-encode")

    def check_text(self, model_cfg) -> None:
        """A text model trains on latents whose captions were encoded by its encoder (and only such a model)."""
        ix, wanted = self.index, model_cfg.text_encoder
        recorded = ix.get("text_encoder", "none")
        if wanted != "none" and (recorded, ix.get("text_tokens")) != (wanted, model_cfg.text_tokens):
            raise DataError(f"latents in {self.root} hold captions encoded by text_encoder={recorded} (text_tokens="
                            f"{ix.get('text_tokens')}), the model reads model.text_encoder={wanted} (text_tokens="
                            f"{model_cfg.text_tokens}); re-encode with ca2vdm encode-latents and this config")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        position = self.clip_position(index)
        entry = self.entries[index % len(self.entries)]
        with safe_open(str(self.root / entry["shard"]), framework="pt") as f:
            frames = f.get_slice(entry["key"])
            clip = torch.cat([frames[:, a:b][:, ::self.frame_stride]
                              for a, b in self.clip_segments(position, entry["frames"])], dim=1)  # (C, T, h, w)
            item = {"video": clip.float(), "label": torch.tensor(entry["label"]),
                    "contiguous": torch.tensor(self.contiguous(position))}
            if "text_tokens" in entry:  # (text_tokens, text_dim) vectors and their mask
                item["text"] = f.get_tensor(entry["key"] + TEXT_SUFFIX).float()
                item["text_mask"] = torch.arange(len(item["text"])) < entry["text_tokens"]
        return item
