"""A downloaded Wan 2.1 text-to-video folder (``--base``): its parts found and checked before any work, then loaded.

Two layouts are read, as the Wan-AI repositories publish them:

* diffusers (``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``): ``model_index.json`` of a ``WanPipeline`` with ``transformer/``,
  ``vae/`` (``AutoencoderKLWan``), ``text_encoder/`` (``UMT5EncoderModel``) and ``tokenizer/``;
* Wan's own (``Wan-AI/Wan2.1-T2V-1.3B``): ``config.json`` with Wan's fields and ``diffusion_pytorch_model*.safetensors``
  in Wan's names, ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth`` and the tokenizer in ``google/umt5-xxl/``
  (the VAE and the T5 file are renamed into diffusers' and transformers' modules of Wan 2.1's sizes).

The folder gives the VAE (the codec), the text encoder and its tokenizer, and the transformer's sizes; its own
transformer is the model unless a checkpoint is given (:mod:`ca2vdm.generation.wan_base`). :func:`find_wan_folder`
reads only JSON files and names: a folder that is not a Wan folder, a missing part or a variant we cannot run
(image-to-video, Wan 2.2's VAE or its two experts) is one line naming what is missing and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ca2vdm.config.training import CodecConfig
from ca2vdm.errors import SettingError
from ca2vdm.models.wan.formats import fields_from_diffusers, fields_from_wan

PIPELINE = "WanPipeline"  # diffusers' text-to-video Wan pipeline (model_index.json's _class_name)
WAN_VAE, WAN_T5, WAN_TOKENIZER = "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl"
DIFFUSERS_PARTS = {"transformer": "transformer/config.json", "VAE": "vae/config.json",
                   "text encoder": "text_encoder/config.json", "tokenizer": "tokenizer/tokenizer_config.json"}
WAN_PARTS = {"VAE": WAN_VAE, "text encoder": WAN_T5, "tokenizer": WAN_TOKENIZER + "/tokenizer_config.json"}
EXPECTED = (f"a Wan 2.1 text-to-video folder: diffusers' (model_index.json of a {PIPELINE}, with transformer/, vae/, "
            f"text_encoder/ and tokenizer/; Wan-AI/Wan2.1-T2V-1.3B-Diffusers) or Wan's own (config.json, {WAN_VAE}, "
            f"{WAN_T5}, {WAN_TOKENIZER}/; Wan-AI/Wan2.1-T2V-1.3B)")


@dataclass(frozen=True)
class WanFolder:
    """The parts of a Wan folder: where each is, and the model fields its transformer config records."""
    root: Path
    layout: str       # "diffusers" | "wan"
    fields: dict      # ModelConfig fields of its transformer (sizes; text_dim is its text encoder's width)

    @property
    def transformer(self) -> Path:
        """What ``ca2vdm.checkpoints.formats.read_weights`` reads for the folder's own transformer."""
        return self.root

    @property
    def factor(self) -> int:
        """The VAE's spatial down-sampling (8)."""
        return self.vae_config.get("scale_factor_spatial", 8)

    @property
    def vae_config(self) -> dict:
        """The VAE's ``AutoencoderKLWan`` config (Wan 2.1's defaults for Wan's own ``.pth``)."""
        return _json(self.root / "vae/config.json") if self.layout == "diffusers" else {}

    @property
    def text_config(self) -> dict:
        """The text encoder's UMT5 config (UMT5-XXL's for Wan's own ``.pth``)."""
        from ca2vdm.encoders.umt5 import UMT5_XXL

        return _json(self.root / "text_encoder/config.json") if self.layout == "diffusers" else dict(UMT5_XXL)

    def codec(self, device: torch.device | str, dtype: torch.dtype):
        """Its VAE as our codec (:class:`~ca2vdm.encoders.wan_vae.WanCodec`), on ``device`` in ``dtype``."""
        from ca2vdm.encoders.codec import build_codec

        if self.layout == "diffusers":
            return build_codec(CodecConfig(kind="diffusers", path=str(self.root), subfolder="vae"), device, dtype)
        from diffusers import AutoencoderKLWan
        from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        from ca2vdm.encoders.wan_vae import WanCodec

        state = convert_wan_vae_to_diffusers(torch.load(self.root / WAN_VAE, map_location="cpu", weights_only=True,
                                                        mmap=True))
        vae = AutoencoderKLWan()  # Wan 2.1's VAE: diffusers' defaults
        missing, unexpected = vae.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SettingError("base", self.root, f"{WAN_VAE} does not fit Wan 2.1's VAE ({len(missing)} tensors "
                               f"missing, {len(unexpected)} unexpected): download it again")
        return WanCodec(vae.to(device, dtype), CodecConfig(kind="diffusers", path=str(self.root / WAN_VAE)))

    def text_encoder(self, max_tokens: int, device: torch.device | str, dtype: str | torch.dtype | None,
                     offload: bool):
        """Its UMT5 encoder and tokenizer (:class:`~ca2vdm.encoders.umt5.UMT5TextEncoder`); with ``offload`` it waits
        on the CPU between prompts."""
        from ca2vdm.encoders.umt5 import UMT5TextEncoder, load_wan_t5
        from ca2vdm.runtime.device import resolve_dtype

        if self.layout == "diffusers":
            return UMT5TextEncoder.from_folders(self.root / "text_encoder", self.root / "tokenizer", max_tokens,
                                                device, dtype, offload)
        from transformers import AutoTokenizer

        words = AutoTokenizer.from_pretrained(self.root / WAN_TOKENIZER, local_files_only=True)
        model = load_wan_t5(self.root / WAN_T5).to(resolve_dtype(dtype, device))
        return UMT5TextEncoder(model, words, max_tokens, device, offload)


def _json(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SettingError("base", path.parent.parent, f"{path.relative_to(path.parent.parent)} cannot be read "
                           f"({type(e).__name__}); download the folder again") from None
    return loaded if isinstance(loaded, dict) else {}


def _missing(root: Path, parts: dict[str, str]) -> None:
    """SettingError naming the first part of ``parts`` (name -> file) that is not in ``root``."""
    for name, file in parts.items():
        if not (root / file).exists():
            raise SettingError("base", root, f"has no {name} ({file} is missing); download the whole folder (e.g. "
                               "huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir DIR)")


def find_wan_folder(path: str | Path) -> WanFolder:
    """The Wan folder at ``path`` with its parts checked (JSON files and names only: no weights read); SettingError
    (``base``) naming what is wrong or missing and the fix."""
    root = Path(path)
    if not root.is_dir():
        raise SettingError("base", root, f"is not a folder; give {EXPECTED}")
    if (root / "model_index.json").is_file():
        index = _json(root / "model_index.json")
        if index.get("_class_name") != PIPELINE:
            raise SettingError("base", root, f"is a {index.get('_class_name')} folder; only text-to-video Wan 2.1 "
                               f"({PIPELINE}) is supported")
        if (index.get("transformer_2") or [None])[0] or index.get("boundary_ratio"):
            raise SettingError("base", root, "is a Wan 2.2 folder with two transformers (high and low noise); only "
                               "Wan 2.1's single transformer is supported")
        _missing(root, DIFFUSERS_PARTS)
        vae = _json(root / "vae/config.json")
        if vae.get("patch_size") or vae.get("z_dim", 16) != 16:
            raise SettingError("base", root, f"has Wan 2.2's VAE (z_dim {vae.get('z_dim')}, patch_size "
                               f"{vae.get('patch_size')}); only Wan 2.1's VAE (16 channels) is supported")
        return WanFolder(root, "diffusers", _fields(root, fields_from_diffusers, "transformer/config.json"))
    config = _json(root / "config.json") if (root / "config.json").is_file() else {}
    if "dim" not in config:
        found = ", ".join(sorted(p.name for p in root.iterdir())[:6]) or "nothing"
        raise SettingError("base", root, f"is not a Wan folder (found {found}); give {EXPECTED}")
    _missing(root, WAN_PARTS)
    return WanFolder(root, "wan", _fields(root, fields_from_wan, "config.json"))


def _fields(root: Path, read, config: str) -> dict:
    """The model fields of the transformer config at ``root / config``; SettingError for one we cannot run."""
    try:
        return read(_json(root / config))
    except (KeyError, ValueError) as e:
        raise SettingError("base", root, f"{config}: {e}") from None
