"""ca2vdm/flex.py: FlexAttention block masks for the masked (training) passes equal the SDPA boolean-mask path, in
outputs and gradients, and are built once per layout. Tiny models on the CPU.

torch 2.13 runs FlexAttention's forward on the CPU, but its public entry point refuses a backward pass there (a
device guard; the reference backward behind it works). The gradient tests lift that guard for the test only; on CUDA
the compiled kernel's gradients are PyTorch's own.
"""
import copy
import importlib

import pytest
import torch
import torch.nn.functional as F

from ca2vdm.config import ChunkLayout
from ca2vdm.models import attention as A
from ca2vdm.models import flex

from helpers import random_model

FLEX_MODULE = importlib.import_module("torch.nn.attention.flex_attention")
FLEX_ATTENTION = flex.attention


@pytest.fixture
def cpu_flex_backward(monkeypatch):
    """Let FlexAttention's CPU reference implementation run backward (torch 2.13 guards it off)."""
    monkeypatch.setattr(FLEX_MODULE, "_validate_device", lambda *tensors: None)


MASKS = {
    "block-causal": A.block_causal_mask(ChunkLayout(2, True), 0, 7),
    "block-causal at offset 4": A.block_causal_mask(ChunkLayout(4, False), 4, 9),
    "teacher forcing": A.teacher_forcing_mask(ChunkLayout(2, True), 0, 5, 7),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_flex_equals_sdpa_with_a_bool_mask_outputs_and_gradients(name, cpu_flex_backward):
    mask = MASKS[name]
    L = mask.shape[0]
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, L, 2, 16, requires_grad=True) for _ in range(3))  # (N, L, H, Dh)
    out = A.attention(q, k, v, A.kernel_mask(lambda device: mask.to(device), "flex", "cpu"))
    grad = torch.randn_like(out)
    flex_grads = torch.autograd.grad(out, (q, k, v), grad)
    sdpa = F.scaled_dot_product_attention(*(a.transpose(1, 2) for a in (q, k, v)), attn_mask=mask).transpose(1, 2)
    sdpa_grads = torch.autograd.grad(sdpa, (q, k, v), grad)
    assert (out - sdpa).abs().max() <= 1e-5
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(flex_grads, sdpa_grads))
    assert out.abs().max() > 0.1 and all(g.abs().max() > 0.01 for g in flex_grads)  # not trivially equal


@pytest.mark.parametrize("teacher_forcing", [False, True])
def test_model_with_flex_block_masks_equals_sdpa_outputs_and_gradients(teacher_forcing, cpu_flex_backward,
                                                                       monkeypatch):
    """The whole model, full-sequence pass (the one-chunk objective) and teacher-forcing layout (the all-chunk
    objective): the same output and the same weight gradients with attention_backend=flex as with sdpa."""
    flex_calls = []
    monkeypatch.setattr(flex, "attention", lambda *a: flex_calls.append(a[3]) or FLEX_ATTENTION(*a))
    models = {b: random_model(num_classes=2, prefix_frames=2, attention_backend=b) for b in ("flex", "sdpa")}
    torch.manual_seed(1)
    T = 7
    x, t, y = torch.randn(2, 3, T + (5 if teacher_forcing else 0), 16, 16), torch.rand(2, T + 5), torch.tensor([0, 1])
    kw = dict(num_cond_frames=5, teacher_forcing=teacher_forcing)
    outs, grads = {}, {}
    for backend, model in models.items():
        out = model(x, t[:, :x.shape[2]], y, **kw)  # eval mode: the CPU allows flex, and gradients still flow
        out.square().mean().backward()
        outs[backend], grads[backend] = out, [p.grad for p in model.parameters()]
    assert (outs["flex"] - outs["sdpa"]).abs().max() <= 1e-5
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(grads["flex"], grads["sdpa"]))
    assert outs["flex"].abs().max() > 0.05
    assert len(flex_calls) == 2 and isinstance(flex_calls[0], flex.BlockMask)  # temporal attention of both blocks


def test_wan_frame_masks_over_its_tokens_equal_sdpa_outputs_and_gradients(cpu_flex_backward):
    """The causal Wan's joint attention: its frame mask stands for every token of a frame (``repeat``), built at frame
    level as a FlexAttention block mask; the teacher-forcing pass equals the SDPA boolean-mask path."""
    from ca2vdm.encoders.text import TextEmbeddings
    from ca2vdm.models.registry import build_model, tiny_config

    outs, grads = {}, {}
    x, t = torch.randn(1, 3, 7 + 5, 16, 16), torch.rand(1, 12)
    text = TextEmbeddings(torch.randn(1, 8, 256), torch.ones(1, 8, dtype=torch.bool))
    for backend in ("flex", "sdpa"):
        torch.manual_seed(0)
        model = build_model(tiny_config("wan", attention_backend=backend)).eval()
        out = model(x, t, num_cond_frames=5, teacher_forcing=True, text=text)
        out.square().mean().backward()
        outs[backend], grads[backend] = out, [p.grad for p in model.parameters()]
    assert (outs["flex"] - outs["sdpa"]).abs().max() <= 1e-5 and outs["flex"].abs().max() > 0.05
    assert all((a - b).abs().max() <= 1e-5 for a, b in zip(grads["flex"], grads["sdpa"]))


def test_block_masks_are_built_once_per_layout(monkeypatch):
    """Every layer and every later step with the same frame layout reuses one block mask."""
    built = []
    original = flex.create_block_mask
    monkeypatch.setattr(flex, "create_block_mask", lambda *a, **kw: built.append(a[3:5]) or original(*a, **kw))
    flex._block_mask.cache_clear()
    model = random_model(attention_backend="flex", depth=3)
    x = torch.randn(1, 3, 7, 16, 16)
    with torch.no_grad():
        for _ in range(3):
            model(x, torch.rand(1, 7), num_cond_frames=5)
        assert built == [(7, 7)]
        model(x[:, :, :5], torch.rand(1, 5), num_cond_frames=3)  # another layout: one more
        model(x, torch.rand(1, 7), num_cond_frames=5, frame_offset=2)  # offset 2 = offset 0 (chunks of 2 after 1)
    assert built == [(7, 7), (5, 5)]


def test_auto_backend_takes_flex_to_train_on_cuda_only():
    assert A.resolve_backend("auto", "cuda", training=True) == "flex"
    assert A.resolve_backend("auto", "cuda") in ("flash", "sdpa")  # sampling: no masks on the cached passes
    assert A.resolve_backend("auto", "cpu", training=True) == "sdpa"
    assert A.resolve_backend("flex", "cpu") == "flex"  # forward only on the CPU
    with pytest.raises(ValueError, match="trains on CUDA only"):
        A.resolve_backend("flex", "cpu", training=True)
    model = copy.deepcopy(random_model(attention_backend="flex")).train()
    with pytest.raises(ValueError, match="attention_backend='flex' trains on CUDA only"):
        model(torch.randn(1, 3, 3, 16, 16), torch.rand(1, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled FlexAttention kernel (GPU check)")
def test_compiled_flex_equals_sdpa_on_cuda():
    mask = MASKS["teacher forcing"]
    L = mask.shape[0]
    torch.manual_seed(0)
    q, k, v = (torch.randn(64, L, 2, 72, device="cuda", requires_grad=True) for _ in range(3))  # XL's head size
    out = A.attention(q, k, v, A.kernel_mask(lambda device: mask.to(device), "flex", "cuda"))
    grad = torch.randn_like(out)
    flex_grads = torch.autograd.grad(out, (q, k, v), grad)
    sdpa = F.scaled_dot_product_attention(*(a.transpose(1, 2) for a in (q, k, v)),
                                          attn_mask=mask.cuda()).transpose(1, 2)
    sdpa_grads = torch.autograd.grad(sdpa, (q, k, v), grad)
    assert (out - sdpa).abs().max() <= 1e-3
    assert all((a - b).abs().max() <= 1e-3 for a, b in zip(flex_grads, sdpa_grads))
