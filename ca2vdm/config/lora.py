"""LoRA fine-tuning's settings (``train.lora``) and the adapters a front end applies (``--lora PATH[:SCALE]``).

A ``train.lora`` section (e.g. ``train.lora.rank=4``, or ``train.lora={}`` for the defaults) makes a run train a
low-rank adapter (Hu et al. 2021, LoRA) on the frozen ``train.init_from`` model instead of every weight: each
targeted linear layer ``W`` becomes ``W + (alpha / rank) B A`` with ``A`` (rank x in) and ``B`` (out x rank, zero at
the start) the only trained tensors. ``targets`` names the layers: the named groups the model's family declares
(``ca2vdm.models.registry``; the DiT's: attention, mlp, adaln), or regular expressions matched against a model's module
names. Torch-free.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ca2vdm.config.options import REFUSED, Declared, setting

BASE_DTYPES = ("fp32", "bf16")
LORA_SCALE = Declared(float, "weight of a LoRA adapter's change (0: the base alone, 1: as trained)", low=-10, high=10)


@dataclass
class LoraConfig:
    """``train.lora``: the adapter trained on the frozen ``train.init_from`` model."""
    rank: int = setting(4, "rows of A / columns of B; the adapter grows linearly with it", low=1)
    alpha: float = setting(4.0, "the adapter's output is scaled by alpha / rank", low=0, low_open=True)
    targets: list[str] = setting(lambda: ["attention", "mlp"], "groups of the model's family (the DiT's: attention, "
                                 "mlp, adaln) or regular expressions of module names", kind=list, item=str,
                                 required=True)
    base_dtype: str = setting("fp32", "the frozen base's linear weights: fp32, or bf16 (half their memory; needs "
                              "bf16 autocast)", choices=BASE_DTYPES)

    def rules(self) -> list[str]:
        """Each target is a group (a name: every group name is a regular expression too) or a regular expression;
        whether it names a layer of the model is checked against the model's family when the adapter is made."""
        return [f"train.lora.targets: {target!r} is neither a group of the model's family (the DiT's: attention, mlp, "
                "adaln) nor a regular expression of module names (e.g. 'stack\\.blocks\\.[23]\\.mlp\\.0')"
                for target in self.targets if not _is_regex(target)]


def lora_problems(lora: LoraConfig | None, train, refused: str | None = None) -> list[str]:
    """What is wrong with ``train.lora`` (None: full training) given the rest of ``train`` (its own fields are
    declared and checked apart); ``refused``: why the trainer takes no adapter (None: it does, the video model's
    trainer, which starts from ``train.init_from``)."""
    if lora is None:
        return []
    problems = []
    if refused:
        problems.append(f"train.lora applies to the video model's trainer (train/train.py), which fine-tunes "
                        f"train.init_from; {refused}: remove train.lora")
    elif not train.init_from:
        problems.append("train.lora needs train.init_from: the checkpoint whose weights the adapter adapts (e.g. "
                        "train.init_from=checkpoints/demo.safetensors)")
    if lora.base_dtype == "bf16" and train.mixed_precision != "bf16":
        problems.append(f"train.lora.base_dtype=bf16 needs train.mixed_precision=bf16 (the frozen bf16 weights meet "
                        f"fp32 activations otherwise), got {train.mixed_precision!r}")
    return problems


def _is_regex(text: str) -> bool:
    try:
        re.compile(text)
    except re.error:
        return False
    return bool(text.strip())


def parse_lora(text: str) -> tuple[str, float]:
    """``PATH[:SCALE]`` (a command line's ``--lora``) -> (path, scale); the scale defaults to 1. A path that exists as
    written (even with a colon, ``b:2``) is a path; one that holds a colon and no number after it keeps its colon.
    ValueError (argparse's message) for a trailing colon with no scale, a path that could be read both ways, or a
    scale outside :data:`LORA_SCALE`'s range."""
    path, sep, scale = text.rpartition(":")
    if sep and not scale.strip():
        raise ValueError(f"{text!r} ends with ':' but gives no scale; write PATH:SCALE (e.g. {path}:0.5), or PATH "
                         "alone for scale 1")
    if not sep or not path or not _looks_numeric(scale):
        return text, 1.0
    if Path(text).exists():
        if Path(path).exists():
            raise ValueError(f"{text!r} could be the file {text} (scale 1) or {path} with scale {scale}; rename one, "
                             f"or write {text}:1")
        return text, 1.0
    value = LORA_SCALE.coerce(scale)
    if value is REFUSED:
        raise ValueError(f"the scale of {text!r} must be {LORA_SCALE.describe()}")
    return path, value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
