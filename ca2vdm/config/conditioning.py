"""What a video may be conditioned on, and what a switch mid-video may change: one rule for the library, the command
line and the server (torch-free, so the server checks a page's message with it before anything runs).

A model is conditioned on ``labels`` (a label model: 0 .. num_classes - 1, plus a null label for guidance), on
``prompts`` (a text model) or on ``none`` (unconditional). Each refuses the other kinds in one line.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from ca2vdm.config.sampler import SWITCH_MODES, check_label
from ca2vdm.errors import SettingError

KINDS = ("labels", "prompts", "none")
MAX_CAPTION_WORDS = 20_000  # a checkpoint records its captions' words up to this many (a larger vocabulary: none)
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters


def condition_kind(num_classes: int, text_conditional: bool) -> str:
    """The kind of condition a model takes: ``prompts``, ``labels`` or ``none``."""
    return "prompts" if text_conditional else "labels" if num_classes else "none"


def check_prompt(prompt: object, name: str = "prompt") -> str:
    """A prompt a user gives, stripped: text with at least one visible character (None, not "", asks for an
    unprompted video), no control character (a NUL byte, an escape) and nothing that is not text (a lone surrogate,
    which no encoder can read); SettingError naming ``name`` otherwise."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise SettingError(name, repr(prompt), "must be a non-empty text (leave the prompt out for a video without "
                           "one)")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SettingError(name, repr(_short(prompt)), f"holds {prompt[e.start]!r}, half of a character (a lone "
                           "surrogate), which is not text: give the prompt as valid Unicode text") from None
    control = next((c for c in prompt if unicodedata.category(c) == "Cc" and not c.isspace()), None)
    if control is not None:
        raise SettingError(name, repr(_short(prompt)), f"holds the control character U+{ord(control):04X}; give "
                           "plain text")
    if all(c.isspace() or unicodedata.category(c) == "Cf" for c in prompt):
        raise SettingError(name, repr(_short(prompt)), "holds no visible character (only spaces and invisible "
                           "format characters such as zero-width spaces); give words")
    return prompt.strip()


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def words(text: str) -> list[str]:
    """The words of a prompt or caption, lowercase (runs of letters; numbers and punctuation are not words)."""
    return _WORD.findall(text.lower())


def caption_words(captions: Iterable[str]) -> list[str] | None:
    """The distinct words of a model's training captions, sorted (what its checkpoint records), or None when there
    are more than :data:`MAX_CAPTION_WORDS` (a large vocabulary is not worth recording)."""
    seen = sorted({w for caption in captions for w in words(caption)})
    return seen if len(seen) <= MAX_CAPTION_WORDS else None


def unseen_words(prompt: str, seen: Iterable[str]) -> list[str]:
    """The words of ``prompt`` that are not among ``seen`` (a model's training captions' words), in prompt order."""
    seen = set(seen)
    return list(dict.fromkeys(w for w in words(prompt) if w not in seen))


def check_condition(kind: str, num_classes: int, label: Any, prompt: Any) -> None:
    """A label for a label model (one of its classes), a prompt for a text model, neither for an unconditional one;
    SettingError naming what was given and what to give instead."""
    if kind == "prompts" and label is not None:
        shown = label.tolist() if hasattr(label, "tolist") else label
        raise SettingError("label", shown, "this model is conditioned on prompts, not labels; give a prompt instead")
    if kind != "prompts" and prompt is not None:
        shown = prompt if isinstance(prompt, str) else "..."
        problem = "this model is conditioned on labels, not prompts; give a label instead" if kind == "labels" \
            else "this model takes no prompt (it is unconditional); give none"
        raise SettingError("prompt", repr(shown), problem)
    if kind != "prompts" and not hasattr(label, "tolist"):  # a tensor of labels (training's rows) is checked later
        check_label(label, num_classes)
    if kind == "prompts" and isinstance(prompt, str):
        check_prompt(prompt)


def check_switch_request(kind: str, num_classes: int, label: Any, prompt: Any, mode: str) -> None:
    """A switch names a known mode and exactly one new condition of the model's kind; SettingError otherwise."""
    if mode not in SWITCH_MODES:
        raise SettingError("switch_mode", mode, f"must be one of {', '.join(SWITCH_MODES)}")
    if (label is None) == (prompt is None):
        raise SettingError("switch", f"label={label}, prompt={prompt!r}", "give a new label or a new prompt")
    check_condition(kind, num_classes, label, prompt)
