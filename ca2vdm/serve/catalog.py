"""The checkpoints a server offers: loaded once at start-up, named for the page, never chosen by path from a client."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ca2vdm.checkpoints.adapters import ADAPTER_NAME, checkpoint_hash, read_adapter
from ca2vdm.config import STEP_CACHE_NAMES, STEP_CACHES, ModelConfig
from ca2vdm.errors import ConfigError, opt
from ca2vdm.generation.api import Pipeline, load_pipeline
from ca2vdm.generation.video_files import FPS
from ca2vdm.runtime.device import resolve_device


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
        """What the page needs to offer this model: its labels (named where the checkpoint names them) or whether it
        takes prompts, frame size ([height, width]) and rate, and how many frames a chunk has."""
        return {"name": self.name, "labels": self.class_names, "size": list(self.pipe.size), "fps": FPS,
                "chunk_frames": self.cfg.chunk_frames, "first_frame_chunk": bool(self.cfg.first_frame_chunk),
                "prompts": self.pipe.model.text_conditional, "text_tokens": self.cfg.text_tokens}

    def check_prompt(self, prompt: str | None) -> None:
        """SettingError for a prompt longer than the model reads (in its encoder's tokens)."""
        encoder = self.pipe.sampler.text_encoder
        if prompt is not None and encoder is not None:
            encoder.encode(prompt)


def offered_names(paths: list[str | Path]) -> list[str]:
    """A name per checkpoint for the page: the file (or folder) stem, or the path as given where stems repeat."""
    stems = [Path(p).stem if Path(p).suffix in (".safetensors", ".pt", ".pth") else Path(p).name for p in paths]
    return [stem if stems.count(stem) == 1 else str(path) for stem, path in zip(stems, paths)]


def load_catalog(paths: list[str | Path], device: str, lora: list[tuple[str | Path, float]] = (), *,
                 base: str | Path | None = None, size: tuple[int, int] | None = None,
                 offload_text_encoder: bool = False) -> dict[str, Offered]:
    """Load every checkpoint in ``paths`` on ``device``, and for each adapter of ``lora`` ((path, scale)) its base
    with the adapter folded in, offered as ``<base>+<adapter>``; errors (CheckpointError, CodecError, SettingError)
    name the file or the setting. With ``base`` (a downloaded Wan folder) each checkpoint is a transformer run with
    its VAE and text encoder (``ca2vdm.load_pipeline(base=...)``; the folder itself: its own transformer), at
    ``size`` (height, width) pixels."""
    if len({Path(p).resolve() for p in paths}) != len(paths):
        raise ConfigError(f"{opt('checkpoint')} lists the same checkpoint twice; give each once")
    torch_device = resolve_device(device)
    catalog, base_names = {}, dict(zip(map(str, paths), offered_names(paths)))
    offered = [(name, path, []) for name, path in zip(offered_names(paths), paths)]  # (name, checkpoint, adapters)
    for adapter, scale in lora:  # each on the checkpoint it was trained on (or refused naming the first and it)
        trained_on = adapter_base(adapter, paths)
        name = f"{base_names[str(trained_on)]}+{adapter_label(adapter)}" + ("" if scale == 1 else f"*{scale:g}")
        offered.append((name, trained_on, [(adapter, scale)]))
    for name, path, adapters in offered:
        pipe = load_pipeline(path, torch_device, lora=adapters, base=base, size=size,
                             offload_text_encoder=offload_text_encoder)
        names = pipe.metadata.class_names or [str(i) for i in range(pipe.model.cfg.num_classes)]
        catalog[name] = Offered(name, Path(path), pipe, names)
    return catalog


def adapter_base(adapter: str | Path, paths: list[str | Path]) -> str | Path:
    """The checkpoint among ``paths`` an adapter was trained on (by the hash of its weights); the first when none
    was, so that loading it refuses the adapter with a line naming both."""
    wanted = read_adapter(adapter).base_sha256
    return next((path for path in paths if checkpoint_hash(path) == wanted), paths[0])


def adapter_label(adapter: str | Path) -> str:
    """A short name of an adapter for the page: its file's stem, or ``<run>/step_N`` for a run's checkpoint."""
    path = Path(adapter)
    if path.is_file() and path.name != ADAPTER_NAME:
        return path.stem  # e.g. checkpoints/demo-white.safetensors -> demo-white
    folder = path if path.is_dir() else path.parent  # a LoRA run's checkpoint folder
    return f"{folder.parent.parent.name}/{folder.name}" if folder.parent.name == "checkpoints" else folder.name


def step_cache_choices() -> dict[str, dict]:
    """The step-caching policies, each with the settings a page may give and their defaults."""
    return {name: {} if name == "none" else STEP_CACHES[name]().options() for name in STEP_CACHE_NAMES}


def step_cache_settings() -> dict[str, list[dict]]:
    """Each policy's settings as the page shows them: name, type, default, range and help."""
    return {name: [] if name == "none" else STEP_CACHES[name].describe() for name in STEP_CACHE_NAMES}
