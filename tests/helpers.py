"""Shared test fixtures: tiny models with non-trivial weights."""
import torch

from ca2vdm.config import model_config
from ca2vdm.model import CausalVideoDiT


def random_model(seed: int = 0, **overrides) -> CausalVideoDiT:
    """A tiny model whose zero-initialised (adaLN-Zero) layers are perturbed, so every path carries signal."""
    torch.manual_seed(seed)
    model = CausalVideoDiT(model_config("tiny", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()
