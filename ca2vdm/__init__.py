"""ca2vdm: long videos from a causal video diffusion transformer with a shared, bounded KV cache.

``ca2vdm.load_pipeline(path)`` loads a checkpoint for generation and ``ca2vdm.write_video(chunks, path)`` writes its
chunks to an mp4 (see :mod:`ca2vdm.api`); they are imported on first use, so ``import ca2vdm`` stays light.
"""
from .config import Config, ModelConfig, load_config, model_config
from .kv_cache import KVCache
from .model import CausalVideoDiT
from .pipeline import LongVideoPipeline

_API = ("load_pipeline", "write_video", "VideoWriter", "Pipeline", "Chunk")  # from .api (video and codec stack)


def __getattr__(name: str):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'ca2vdm' has no attribute {name!r}")


__all__ = ["Config", "ModelConfig", "load_config", "model_config", "KVCache", "CausalVideoDiT",
           "LongVideoPipeline", *_API]
