"""Text encoders: prompts to token vectors the model cross-attends to (``model.text_encoder``).

* ``wordllama``: the static token-embedding table that the ``wordllama`` package ships inside its wheel (LLaMA-2
  tokenizer, 32000 tokens x 256; no download, no network). Its API pools tokens into one sentence vector
  (``embed``); we read the table row of every token instead (``embed(pool_embeddings=False)`` pads with the pad
  row, which we mask), so cross-attention sees one vector per token. The vectors carry no context and no order:
  "a red circle" is the bag {a, red, circle}; enough for attribute captions, and the CPU default.
* a local folder of a transformers text encoder (``save_pretrained`` of a T5 encoder or a CLIP text model, with its
  tokenizer): loaded with ``local_files_only=True``; its last hidden states are the token vectors (the GPU choice).

:class:`TextEmbeddings` are padded to the model's ``text_tokens`` with a mask, so every prompt gives tensors of one
shape. The empty prompt (no tokens) is the unconditional prompt of classifier-free guidance; the model adds a learned
null token to every prompt (:mod:`ca2vdm.models.cross_attention`), so even it has a key to attend to.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ca2vdm.config.conditioning import unseen_words
from ca2vdm.errors import ConfigError, SettingError

WORDLLAMA_DIM = 256
REMEMBERED_PROMPTS = 1024  # distinct prompts an encoder keeps encoded (the oldest used is forgotten first)


@dataclass
class TextEmbeddings:
    """Prompts as padded token vectors: ``tokens`` (B, L, text_dim) float32, ``mask`` (B, L) bool, True = a token."""
    tokens: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> TextEmbeddings:
        return TextEmbeddings(self.tokens.to(device), self.mask.to(device))

    @staticmethod
    def cat(parts: list[TextEmbeddings]) -> TextEmbeddings:
        """Rows of several batches, one after the other."""
        return TextEmbeddings(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]))

    def rows(self, index: torch.Tensor | slice) -> TextEmbeddings:
        return TextEmbeddings(self.tokens[index], self.mask[index])


class TextEncoder:
    """Prompts -> :class:`TextEmbeddings` of at most ``max_tokens`` tokens; subclasses tokenize and embed. Each
    distinct prompt is encoded once, alone (so its vectors never depend on the other prompts of a batch), and kept for
    the next time it is asked for: checking a prompt, a generation's start, its switches and the server's pages all
    reuse it. Encoders whose vectors are large keep fewer prompts (``remembered``)."""
    dim: int
    remembered = REMEMBERED_PROMPTS
    cuts_long_prompts = False  # True: a prompt over max_tokens is cut (too_long), never refused

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self._encoded: OrderedDict[str, TextEmbeddings] = OrderedDict()  # prompt -> its (1, L) row, most recent last
        self.seen_words: frozenset[str] | None = None  # the model's training captions' words, where recorded

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def embed_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> (B, L, dim) vectors."""
        raise NotImplementedError

    def encode(self, prompts: list[str] | str) -> TextEmbeddings:
        """Token vectors of each prompt, padded to ``max_tokens``; SettingError for a prompt that is longer."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for prompt in dict.fromkeys(prompts):
            if prompt in self._encoded:
                self._encoded.move_to_end(prompt)
            else:
                self._encoded[prompt] = self._encode_one(prompt)
                if len(self._encoded) > self.remembered:
                    self._encoded.popitem(last=False)
        return TextEmbeddings.cat([self._encoded[prompt] for prompt in prompts])

    def problem(self, prompt: str) -> str | None:
        """Why this encoder cannot read ``prompt`` (more tokens than ``max_tokens``, where it refuses them rather
        than cut them), or None (a caption's check at load: tokenized, not embedded)."""
        (row,) = self.token_ids([prompt])
        return None if len(row) <= self.max_tokens or self.cuts_long_prompts else self._too_long(len(row))

    def _too_long(self, tokens: int) -> str:
        return f"is {tokens} tokens long; this model reads at most {self.max_tokens} (model.text_tokens): shorten it"

    def _encode_one(self, prompt: str) -> TextEmbeddings:
        """(1, L) token vectors of one prompt, padding zeroed."""
        (row,) = self.token_ids([prompt])
        if len(row) > self.max_tokens:
            row = self.too_long(prompt, row)
        unseen = [] if self.seen_words is None else unseen_words(prompt, self.seen_words)
        if unseen:  # said once: each distinct prompt is encoded once
            warnings.warn(f"prompt {shorten(prompt)!r}: the model never saw {', '.join(map(repr, unseen))} in its "
                          "training captions, so it may follow those words little or not at all", stacklevel=3)
        ids = torch.zeros(1, self.max_tokens, dtype=torch.long)
        mask = torch.zeros(1, self.max_tokens, dtype=torch.bool)
        ids[0, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[0, :len(row)] = True
        with torch.no_grad():
            tokens = self.embed_ids(ids, mask).float().cpu() * mask[..., None]  # (1, L, dim), padding zeroed
        return TextEmbeddings(tokens, mask)

    def too_long(self, prompt: str, row: list[int]) -> list[int]:
        """What to do with a prompt of more than ``max_tokens`` tokens (``row``): refuse it (SettingError); an
        encoder that cuts them instead (``cuts_long_prompts``) overrides this."""
        raise SettingError("prompt", repr(shorten(prompt)), self._too_long(len(row)))


def shorten(prompt: str, limit: int = 40) -> str:
    """A prompt as an error message quotes it: its first ``limit`` characters."""
    return prompt if len(prompt) <= limit else prompt[:limit] + "..."


class WordLlamaEncoder(TextEncoder):
    """The token-embedding table shipped in the ``wordllama`` wheel (no download)."""
    dim = WORDLLAMA_DIM

    def __init__(self, max_tokens: int):
        super().__init__(max_tokens)
        import wordllama
        from wordllama import WordLlama

        # the package looks for its shipped tokenizer under a folder name it does not ship; its own folder, given as
        # the cache, holds both files where the lookup expects them
        shipped = Path(wordllama.__file__).parent
        model = WordLlama.load(cache_dir=shipped, disable_download=True)
        self.tokenizer = model.tokenizer
        self.table = torch.from_numpy(model.embedding)  # (32000, 256)

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return [enc.ids[:sum(enc.attention_mask)] for enc in
                self.tokenizer.encode_batch(prompts, add_special_tokens=False)]

    def embed_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


class TransformersEncoder(TextEncoder):
    """A ``save_pretrained`` folder of a T5 encoder or CLIP text model (and its tokenizer), read offline."""

    def __init__(self, folder: str | Path, max_tokens: int):
        super().__init__(max_tokens)
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.text_encoder={folder} is not a text encoder: give none, wordllama, or a folder "
                              "holding a transformers encoder's config.json and tokenizer (save_pretrained)")
        from transformers import AutoConfig, AutoTokenizer, CLIPTextModel, T5EncoderModel

        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            kind = {"t5": T5EncoderModel, "clip_text_model": CLIPTextModel, "clip": CLIPTextModel}.get(
                config.model_type)
            if kind is None:
                raise ValueError(f"model type {config.model_type!r} is not a T5 encoder or a CLIP text model")
            self.model = kind.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.text_encoder={folder} cannot be loaded as a text encoder: "
                              f"{str(e).splitlines()[0]}") from None
        config = self.model.config
        self.dim = getattr(config, "d_model", None) or config.hidden_size

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=bool(p))["input_ids"] for p in prompts]

    def embed_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not mask.any():  # every prompt empty: nothing to run
            return torch.zeros(*ids.shape, self.dim)
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state


def build_text_encoder(name: str, max_tokens: int, beside: Path | None = None) -> TextEncoder | None:
    """The encoder ``model.text_encoder`` names: None for ``none``; a folder is also looked up relative to
    ``beside`` (the checkpoint's folder: shipped encoders travel with the weights)."""
    if name == "none":
        return None
    if name == "wordllama":
        return WordLlamaEncoder(max_tokens)
    folder = Path(name)
    if not folder.is_dir() and beside is not None and (beside / name).is_dir():
        folder = beside / name
    return TransformersEncoder(folder, max_tokens)
