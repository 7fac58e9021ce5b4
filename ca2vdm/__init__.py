"""ca2vdm: long videos from a causal video diffusion transformer with a shared, bounded KV cache."""
from .config import Config, ModelConfig, load_config, model_config
from .kv_cache import KVCache
from .model import CausalVideoDiT
from .pipeline import LongVideoPipeline

__all__ = ["Config", "ModelConfig", "load_config", "model_config", "KVCache", "CausalVideoDiT",
           "LongVideoPipeline"]
