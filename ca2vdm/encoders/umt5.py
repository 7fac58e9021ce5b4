"""UMT5, Wan's text encoder: transformers' ``UMT5EncoderModel`` and its tokenizer read offline, prompts encoded as Wan
encodes them.

As diffusers' ``WanPipeline``: a prompt is cleaned (``prompt_clean``: HTML unescaped, whitespace collapsed, ftfy when
installed), tokenized with ``</s>`` appended, padded to 512 tokens (``model.text_tokens``), run through the encoder
with its attention mask, and the vectors past the prompt's length are zeroed; all 512 rows are kept (Wan's
cross-attention reads the padded rows too). The empty prompt is the single token ``</s>``, as Wan encodes "" for
its negative prompt. A prompt longer than the limit is cut as Wan cuts it (the tokenizer's truncation, ``</s>``
kept last), with one warning, where our other encoders refuse it.

UMT5-XXL has 5.7 billion parameters (10.6 GiB in bf16): it runs in bf16 on a GPU, and with ``offload`` it waits on
the CPU between prompts and visits the GPU only to encode a new one. Wan's own release ships it as
``models_t5_umt5-xxl-enc-bf16.pth`` in Wan's names: :func:`load_wan_t5` maps them onto ``UMT5EncoderModel``.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ca2vdm.encoders.text import TextEncoder, shorten
from ca2vdm.errors import ConfigError
from ca2vdm.runtime.device import resolve_dtype

UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu")  # google/umt5-xxl's encoder: Wan 2.1's text encoder
WAN_TOKENS = 512  # Wan's prompt length (WanPipeline's max_sequence_length)
REMEMBERED_UMT5_PROMPTS = 64  # 512 x 4096 float32 vectors are 8 MiB a prompt

# Wan's T5Encoder names (wan/modules/t5.py) -> UMT5EncoderModel's
WAN_T5_NAMES = [
    (r"^token_embedding\.weight$", "shared.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight"),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
    (r"^norm\.weight$", "encoder.final_layer_norm.weight"),
]


class UMT5TextEncoder(TextEncoder):
    """A UMT5 encoder (used in the dtype it has) and its tokenizer, prompts padded and cut as Wan does, run on
    ``device``; with ``offload`` the weights stay on the CPU except while a new prompt is encoded."""
    remembered = REMEMBERED_UMT5_PROMPTS

    def __init__(self, model: torch.nn.Module, tokenizer, max_tokens: int = WAN_TOKENS,
                 device: torch.device | str = "cpu", offload: bool = False):
        super().__init__(max_tokens)
        self.device, self.offload, self.tokenizer = torch.device(device), offload, tokenizer
        self.model = model.eval().requires_grad_(False).to("cpu" if offload else self.device)
        self.dim = model.config.d_model

    @classmethod
    def from_folders(cls, encoder: str | Path, tokenizer: str | Path, max_tokens: int = WAN_TOKENS,
                     device: torch.device | str = "cpu", dtype: str | torch.dtype | None = None,
                     offload: bool = False) -> UMT5TextEncoder:
        """The ``save_pretrained`` folders of a Wan diffusers folder (``text_encoder/`` and ``tokenizer/``), offline,
        loaded in ``dtype`` (None: bf16 on CUDA, fp32 on the CPU)."""
        from transformers import AutoTokenizer, UMT5EncoderModel

        try:
            words = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
            model = UMT5EncoderModel.from_pretrained(encoder, local_files_only=True,
                                                     torch_dtype=resolve_dtype(dtype, device))
        except (OSError, ValueError) as e:
            raise ConfigError(f"UMT5 text encoder {encoder} (tokenizer {tokenizer}) cannot be loaded: "
                              f"{str(e).splitlines()[0]}; give a folder written by save_pretrained (a Wan diffusers "
                              "folder's text_encoder/ and tokenizer/)") from None
        return cls(model, words, max_tokens, device, offload)

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(_clean(p))["input_ids"] for p in prompts]

    cuts_long_prompts = True

    def too_long(self, prompt: str, row: list[int]) -> list[int]:
        """Cut as Wan cuts (the tokenizer's truncation keeps ``</s>`` last), with a warning."""
        warnings.warn(f"prompt {shorten(prompt)!r} is {len(row)} tokens long; UMT5 reads {self.max_tokens} "
                      f"(model.text_tokens): it is cut to its first {self.max_tokens}, as Wan does", stacklevel=4)
        return self.tokenizer(_clean(prompt), truncation=True, max_length=self.max_tokens)["input_ids"]

    def embed_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.model.to(self.device)
        try:
            return self.model(input_ids=ids.to(self.device),
                              attention_mask=mask.to(self.device).long()).last_hidden_state  # (B, L, dim)
        finally:
            if self.offload:
                self.model.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


def _clean(prompt: str) -> str:
    """WanPipeline's prompt cleaning."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return prompt_clean(prompt)


def wan_t5_to_umt5(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in Wan's T5Encoder names -> UMT5EncoderModel's (the embedding also as ``encoder.embed_tokens``);
    ConfigError naming a key that Wan's encoder does not have."""
    out = {}
    for key, value in state.items():
        new = next((re.sub(pattern, name, key) for pattern, name in WAN_T5_NAMES if re.match(pattern, key)), None)
        if new is None:
            raise ConfigError(f"{key!r} is not a name of Wan's T5 encoder (models_t5_umt5-xxl-enc-bf16.pth)")
        out[new] = value
    out["encoder.embed_tokens.weight"] = out.get("shared.weight")
    return out


def load_wan_t5(path: str | Path, config: dict | None = None) -> torch.nn.Module:
    """Wan's own T5 file (``models_t5_umt5-xxl-enc-bf16.pth``) as a ``UMT5EncoderModel`` of ``config`` (UMT5-XXL's by
    default), its tensors used as stored (bf16 in Wan's file; no random initialisation first)."""
    from transformers import UMT5Config, UMT5EncoderModel

    state = wan_t5_to_umt5(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**(config or UMT5_XXL)))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ConfigError(f"{path} does not fit UMT5 {config or 'XXL'}: {len(missing)} missing (e.g. "
                          f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}) tensors")
    return model.eval()
