"""What a video may be conditioned on, and what a switch mid-video may change: one rule for the library, the command
line and the server (torch-free, so the server checks a page's message with it before anything runs).

A model is conditioned on ``labels`` (a label model: 0 .. num_classes - 1, plus a null label for guidance), on
``prompts`` (a text model) or on ``none`` (unconditional). Each refuses the other kinds in one line.
"""
from __future__ import annotations

from typing import Any

from ca2vdm.config.sampler import SWITCH_MODES, check_label
from ca2vdm.errors import SettingError

KINDS = ("labels", "prompts", "none")


def condition_kind(num_classes: int, text_conditional: bool) -> str:
    """The kind of condition a model takes: ``prompts``, ``labels`` or ``none``."""
    return "prompts" if text_conditional else "labels" if num_classes else "none"


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


def check_switch_request(kind: str, num_classes: int, label: Any, prompt: Any, mode: str) -> None:
    """A switch names a known mode and exactly one new condition of the model's kind; SettingError otherwise."""
    if mode not in SWITCH_MODES:
        raise SettingError("switch_mode", mode, f"must be one of {', '.join(SWITCH_MODES)}")
    if (label is None) == (prompt is None):
        raise SettingError("switch", f"label={label}, prompt={prompt!r}", "give a new label or a new prompt")
    check_condition(kind, num_classes, label, prompt)
