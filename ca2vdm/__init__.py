"""ca2vdm: long videos from a causal video diffusion transformer with a shared, bounded KV cache.

``ca2vdm.load_pipeline(path)`` loads a checkpoint for generation and ``ca2vdm.write_video(chunks, path)`` writes its
chunks to an mp4 (:mod:`ca2vdm.generation.api`). Every name here is imported on first use, so ``import ca2vdm``
loads nothing heavy (no torch).

The package by concern, from the bottom layer up (a module imports only from its own layer and the ones below):
``errors``, ``config`` (torch-free settings), ``runtime`` (device, precision, stop signals), ``io`` (files and media),
``encoders`` (codecs, text encoders), ``data`` (datasets), ``models`` (the model interface and registry, the DiT,
attention, KV cache, hooks), ``checkpoints``, ``sampling`` (flow, the autoregressive pipeline, step caches, compile),
``generation`` (the API, video files, many videos), ``evaluation``, ``training``, ``serve`` (the live demo) and ``cli``
(the command lines).
"""
from importlib import import_module

_EXPORTS = {
    "Config": "ca2vdm.config", "ModelConfig": "ca2vdm.config", "load_config": "ca2vdm.config",
    "model_config": "ca2vdm.config", "ChunkLayout": "ca2vdm.config", "SamplerSettings": "ca2vdm.config",
    "CausalVideoModel": "ca2vdm.models.base", "build_model": "ca2vdm.models.registry",
    "LongVideoPipeline": "ca2vdm.sampling.pipeline",
    "load_pipeline": "ca2vdm.generation.api", "write_video": "ca2vdm.generation.api",
    "Pipeline": "ca2vdm.generation.api", "Chunk": "ca2vdm.generation.api", "VideoWriter": "ca2vdm.io.video_writer",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ca2vdm' has no attribute {name!r}")


__all__ = list(_EXPORTS)
