"""What a video is conditioned on: a label or a prompt (one per video), the rows of classifier-free guidance, and the
frames in the window.

A label model takes labels (:func:`~ca2vdm.config.check_label`), a text model prompts (``model.text_encoder``); each
refuses the other in one line. With guidance the rows are [conditional | unconditional]: the null label, or the empty
prompt (no tokens: only the model's learned null token). A prompt's cross-attention K/V are computed here once per
prompt (:meth:`~ca2vdm.models.dit.CausalVideoDiT.text_kv`) and kept in the KV cache beside the frames' K/V.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ca2vdm.config import SWITCH_MODES, check_label
from ca2vdm.encoders.text import TextEmbeddings, TextEncoder, check_prompt
from ca2vdm.errors import SettingError
from ca2vdm.models.cross_attention import TextKV
from ca2vdm.models.dit import CausalVideoDiT
from ca2vdm.models.kv_cache import KVCache

Prompt = str | list[str] | TextEmbeddings | None  # one for every video, one per video, or already encoded


@dataclass
class Conditioning:
    """What a video is conditioned on. With guidance the rows are [conditional | unconditional] (2B rows), run
    as one batched pass and split afterwards; without it, B rows."""
    labels: torch.Tensor | None             # (G * B,) or None for a model without labels
    groups: int                             # guidance branches batched together: 1 or 2
    cache: KVCache | None                   # mode kv: one cache for all G * B rows (and the prompt's K/V)
    text: TextKV | None = None              # a text model: the prompts' K/V, G * B rows
    context: list[torch.Tensor] = field(default_factory=list)  # perturbed frames (B, C, n, H, W) after the sinks:
    #                                         the window (modes kv and none) or every frame (mode full)
    sinks: list[torch.Tensor] = field(default_factory=list)    # modes kv and none: the first sink_frames frames


def empty_prompts(model: CausalVideoDiT, batch: int) -> TextEmbeddings:
    """The empty prompt for ``batch`` videos: no tokens (guidance's unconditional branch, or no prompt at all)."""
    cfg = model.cfg
    return TextEmbeddings(torch.zeros(batch, cfg.text_tokens, cfg.text_dim), torch.zeros(batch, cfg.text_tokens,
                                                                                         dtype=torch.bool))


def embed_prompts(model: CausalVideoDiT, encoder: TextEncoder | None, prompt: Prompt, batch: int) -> TextEmbeddings:
    """(B rows) token vectors of ``prompt``; None: the empty prompt."""
    if prompt is None:
        return empty_prompts(model, batch)
    if isinstance(prompt, TextEmbeddings):
        if len(prompt) not in (1, batch):
            raise SettingError("prompt", f"{len(prompt)} encoded prompts", f"give one, or one per video ({batch})")
        return prompt if len(prompt) == batch else TextEmbeddings.cat([prompt] * batch)
    prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
    if len(prompts) != batch:
        raise SettingError("prompt", f"{len(prompts)} prompts", f"give one, or one per video ({batch})")
    if encoder is None:
        raise ValueError("this pipeline has no text encoder to read prompts (ca2vdm.encoders.text.build_text_encoder)")
    return encoder.encode([check_prompt(p) for p in prompts])


def check_kind(model: CausalVideoDiT, label, prompt: Prompt) -> None:
    """A label for a label model, a prompt for a text model; one clear line otherwise."""
    if model.text_conditional and label is not None:
        raise SettingError("label", label if not isinstance(label, torch.Tensor) else label.tolist(),
                           "this model is conditioned on prompts, not labels; give a prompt instead")
    if not model.text_conditional and prompt is not None:
        shown = prompt if isinstance(prompt, str) else "..."
        problem = "this model is conditioned on labels, not prompts; give a label instead" if model.null_label \
            is not None else "this model takes no prompt (it is unconditional); give none"
        raise SettingError("prompt", repr(shown), problem)


def check_switch_request(model: CausalVideoDiT, label, prompt: Prompt, mode: str) -> None:
    """A switch names a known mode and exactly one new condition of the model's kind; one clear line otherwise."""
    if mode not in SWITCH_MODES:
        raise SettingError("switch_mode", mode, f"must be one of {', '.join(SWITCH_MODES)}")
    if (label is None) == (prompt is None):
        raise SettingError("switch", f"label={label}, prompt={prompt!r}", "give a new label or a new prompt")
    check_kind(model, label, prompt)


def label_rows(model: CausalVideoDiT, label: int | torch.Tensor | None, batch: int, groups: int,
               device: torch.device) -> torch.Tensor | None:
    """(G * B,) labels: the conditional rows, then the null label for guidance; None for a model without labels."""
    null = model.null_label
    if null is None:
        check_label(label, 0)
        return None
    if isinstance(label, torch.Tensor):  # one per row, the null label allowed (training's rollouts)
        labels = label.to(device).long().expand(batch).clone()
        if labels.min() < 0 or labels.max() > null:
            raise SettingError("label", label.tolist(), f"labels must be in 0 .. {null} (the null label)")
    else:
        label = null if label is None else check_label(label, null)
        labels = torch.full((batch,), label, device=device, dtype=torch.long)
    return torch.cat([labels, torch.full_like(labels, null)]) if groups == 2 else labels


def text_rows(model: CausalVideoDiT, encoder: TextEncoder | None, prompt: Prompt, batch: int,
              groups: int) -> TextKV | None:
    """The prompts' K/V for G * B rows (the empty prompt in the unconditional rows); None for a model without text."""
    if not model.text_conditional:
        return None
    rows = embed_prompts(model, encoder, prompt, batch)
    if groups == 2:
        rows = TextEmbeddings.cat([rows, empty_prompts(model, batch)])
    return model.text_kv(rows)
