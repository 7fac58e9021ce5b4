"""What a video is conditioned on: a label or a prompt (one per video), the rows of classifier-free guidance, and the
frames in the window.

A label model takes labels, a text model prompts; each refuses the other in one line (the rule is torch-free, shared
with the server: :mod:`ca2vdm.config.conditioning`). With guidance the rows are [conditional | unconditional]: the
null label, or the model's empty prompt (:meth:`~ca2vdm.models.base.CausalVideoModel.empty_text`). A prompt's
cross-attention K/V are computed here once per prompt (:meth:`~ca2vdm.models.base.CausalVideoModel.text_kv`) and kept
in one place, :attr:`Conditioning.text`, which every pass of the generation is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ca2vdm.config import check_label
from ca2vdm.config.conditioning import check_condition, check_prompt, condition_kind
from ca2vdm.encoders.text import TextEmbeddings, TextEncoder
from ca2vdm.errors import SettingError
from ca2vdm.models.base import CausalVideoModel, ContextCache, PromptKV

Prompt = str | list[str] | TextEmbeddings | None  # one for every video, one per video, or already encoded


@dataclass
class Conditioning:
    """What a video is conditioned on. With guidance the rows are [conditional | unconditional] (2B rows), run
    as one batched pass and split afterwards; without it, B rows."""
    labels: torch.Tensor | None             # (G * B,) or None for a model without labels
    groups: int                             # guidance branches batched together: 1 or 2
    cache: ContextCache | None              # mode kv: one cache for all G * B rows
    text: PromptKV | None = None            # a text model: the prompts' K/V, G * B rows (made once per prompt)
    context: list[torch.Tensor] = field(default_factory=list)  # perturbed frames (B, C, n, H, W) after the sinks:
    #                                         the window (modes kv and none) or every frame (mode full)
    sinks: list[torch.Tensor] = field(default_factory=list)    # modes kv and none: the first sink_frames frames


def kind_of(model: CausalVideoModel) -> str:
    """The kind of condition ``model`` takes (:func:`ca2vdm.config.conditioning.condition_kind`)."""
    return condition_kind(model.cfg.num_classes if model.null_label is not None else 0, model.text_conditional)


def check_kind(model: CausalVideoModel, label, prompt: Prompt) -> None:
    """A label for a label model (one of its classes), a prompt for a text model; one clear line otherwise."""
    check_condition(kind_of(model), model.cfg.num_classes, label, prompt)


def embed_prompts(model: CausalVideoModel, encoder: TextEncoder | None, prompt: Prompt,
                  batch: int) -> TextEmbeddings:
    """(B rows) token vectors of ``prompt``; None: the model's empty prompt."""
    if prompt is None:
        return model.empty_text(batch, encoder)
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


def label_rows(model: CausalVideoModel, label: int | torch.Tensor | None, batch: int, groups: int,
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


def text_rows(model: CausalVideoModel, encoder: TextEncoder | None, prompt: Prompt, batch: int,
              groups: int) -> PromptKV | None:
    """The prompts' K/V for G * B rows (the empty prompt in the unconditional rows); None for a model without text."""
    if not model.text_conditional:
        return None
    rows = embed_prompts(model, encoder, prompt, batch)
    if groups == 2:
        rows = TextEmbeddings.cat([rows, model.empty_text(batch, encoder)])
    return model.text_kv(rows)
