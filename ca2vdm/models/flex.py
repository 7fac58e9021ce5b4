"""FlexAttention for the masked temporal attention of training (block-causal and teacher-forcing masks).

SDPA takes an arbitrary boolean mask only in its math and memory-efficient kernels on CUDA; FlexAttention
(``torch.nn.attention.flex_attention``, PyTorch's compiled attention with ``mask_mod`` functions) turns the mask into
a fused kernel that skips fully masked blocks. A mask here depends only on the frame layout of a pass and is the same
for every layer, spatial token and head, so its :class:`BlockMask` is built once per distinct mask and kept
(:func:`block_mask`), never per layer or per step.

Devices: on CUDA the compiled FlexAttention kernel runs (compiled once per process and shape). On the CPU, torch
2.13 runs FlexAttention's forward pass (an unfused reference implementation that materialises the scores: used
here, it checks the masks against SDPA) but its public entry point refuses a backward pass, so training with
``attention_backend=flex`` needs CUDA (:func:`ca2vdm.models.attention.resolve_backend` says so). The tests compare
outputs and gradients with the SDPA boolean-mask path on the CPU by lifting that guard for the test only.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

__all__ = ["BlockMask", "attention", "block_mask"]

BLOCK_MASKS_KEPT = 64  # distinct (layout, device) block masks cached; a training run uses a handful


def block_mask(mask: torch.Tensor, device: torch.device | str, repeat: int = 1) -> BlockMask:
    """The FlexAttention block mask of a (Lq, Lk) bool mask (True = attend) on ``device``, cached by content; with
    ``repeat`` = n every entry stands for n x n (a frame mask over n tokens a frame: (Lq * n, Lk * n) positions).

    ``mask`` should live on the CPU (it is read to form the cache key: on CUDA that would be a sync per pass).
    """
    return _block_mask(tuple(mask.shape), mask.cpu().numpy().tobytes(), str(torch.device(device)), repeat)


@lru_cache(maxsize=BLOCK_MASKS_KEPT)
def _block_mask(shape: tuple[int, int], bits: bytes, device: str, repeat: int) -> BlockMask:
    dense = torch.frombuffer(bytearray(bits), dtype=torch.bool).reshape(shape).to(device)  # (Lq, Lk)

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[q_idx // repeat, kv_idx // repeat]

    return create_block_mask(mask_mod, None, None, shape[0] * repeat, shape[1] * repeat, device=device)


@lru_cache(maxsize=None)
def _compiled_flex_attention():
    return torch.compile(flex_attention, dynamic=False)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask) -> torch.Tensor:
    """Softmax attention under a block mask. q: (N, Lq, H, Dh); k, v: (N, Lk, H, Dh) -> (N, Lq, H, Dh).

    Under autocast the inputs are cast to the autocast dtype first, as autocast does for SDPA. The kernel keeps its
    softmax statistics in float32.
    """
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = (a.to(dtype) for a in (q, k, v))
    q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (N, H, L, Dh)
    if q.device.type == "cuda":
        return _compiled_flex_attention()(q, k, v, block_mask=mask).transpose(1, 2)
    with warnings.catch_warnings():  # the CPU reference path is unfused on purpose: no advice to compile
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=mask).transpose(1, 2)  # (N, Lq, H, Dh)
