"""The checkpoints a server offers: loaded once at start-up, named for the page, never chosen by path from a client."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..api import Pipeline, load_pipeline
from ..config import ModelConfig
from ..generate import GenerationOptions, resolve_device
from ..step_cache import POLICIES, option_defaults

FPS = GenerationOptions.fps  # the video's frame rate: the command line's default


@dataclass
class Offered:
    """One checkpoint the server offers under ``name``, loaded on the server's device as the command line loads it."""
    name: str
    path: Path
    pipe: Pipeline              # model, codec and recorded sampler settings; the step cache is set per generation
    class_names: list[str]      # one per label; [] for an unconditional model

    @property
    def cfg(self) -> ModelConfig:
        return self.pipe.model.cfg

    def describe(self) -> dict:
        """What the page needs to offer this model: its labels (named where the checkpoint names them), frame size
        and rate, and how many frames a chunk has."""
        return {"name": self.name, "labels": self.class_names, "size": self.pipe.size, "fps": FPS,
                "chunk_frames": self.cfg.chunk_frames, "first_frame_chunk": bool(self.cfg.first_frame_chunk)}


def class_names(meta: dict, num_classes: int) -> list[str]:
    """The checkpoint's ``class_names`` metadata when it has one name per class, else the label numbers."""
    names = meta.get("class_names")
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return names
    return [str(i) for i in range(num_classes)]


def offered_names(paths: list[str | Path]) -> list[str]:
    """A name per checkpoint for the page: the file (or folder) stem, or the path as given where stems repeat."""
    stems = [Path(p).stem if Path(p).suffix == ".safetensors" else Path(p).name for p in paths]
    return [stem if stems.count(stem) == 1 else str(path) for stem, path in zip(stems, paths)]


def load_catalog(paths: list[str | Path], device: str) -> dict[str, Offered]:
    """Load every checkpoint in ``paths`` on ``device``; errors (CheckpointError, CodecError, ValueError) name the
    file or the flag."""
    if len({Path(p).resolve() for p in paths}) != len(paths):
        raise ValueError("--checkpoint lists the same checkpoint twice; give each once")
    torch_device = resolve_device(device)
    catalog = {}
    for name, path in zip(offered_names(paths), paths):
        pipe = load_pipeline(path, torch_device)
        catalog[name] = Offered(name, Path(path), pipe, class_names(pipe.metadata, pipe.model.cfg.num_classes))
    return catalog


def step_cache_choices() -> dict[str, dict[str, float | int]]:
    """The step-caching policies of the registry, each with the settings a page may give (``--step-cache-opt``) and
    their defaults."""
    return {name: {} if name == "none" else option_defaults(name) for name in POLICIES}
