"""CUDA-only checks (marker ``cuda``; run by scripts/gpu_check.sh, skipped on machines without a GPU): FlexAttention
against SDPA, bf16 against fp32, inductor-compiled blocks against eager, and which SDPA kernel a cached pass runs.
The CPU versions of the first three are tests/test_flex.py, tests/test_precision.py and tests/test_compile.py."""
import copy

import pytest
import torch
from test_precision import TOLERANCES, _generate

from ca2vdm.sampling.compile import compile_blocks, warm_up
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
FUSED_SDPA = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
              "aten::_scaled_dot_product_cudnn_attention")


def test_flex_block_masks_equal_sdpa_on_cuda():
    """Training passes (full sequence and teacher forcing) through FlexAttention's compiled kernel against SDPA with
    a boolean mask: same outputs and weight gradients within float32 rounding."""
    models = {b: random_model(num_classes=2, prefix_frames=2, attention_backend=b).cuda().train()
              for b in ("flex", "sdpa")}
    torch.manual_seed(1)
    for teacher_forcing in (False, True):
        T = 7 + (5 if teacher_forcing else 0)
        x, t, y = torch.randn(2, 3, T, 16, 16).cuda(), torch.rand(2, T).cuda(), torch.tensor([0, 1]).cuda()
        outs, grads = {}, {}
        for backend, model in models.items():
            model.zero_grad()
            out = model(x, t, y, num_cond_frames=5, teacher_forcing=teacher_forcing)
            out.square().mean().backward()
            outs[backend], grads[backend] = out, [p.grad.clone() for p in model.parameters()]
        assert (outs["flex"] - outs["sdpa"]).abs().max() <= 1e-4
        assert all((a - b).abs().max() <= 1e-4 for a, b in zip(grads["flex"], grads["sdpa"]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_cached_generation_matches_fp32_on_cuda(dtype):
    """As tests/test_precision.py, on the GPU's kernels: bf16 (fp16) cached generation against fp32 recomputation."""
    model = random_model(num_classes=3, prefix_frames=2).cuda()
    reference = _generate(model, "none")
    error = (_generate(copy.deepcopy(model).to(dtype), "kv") - reference).abs()
    worst, mean = TOLERANCES[dtype]
    assert 0 < error.max() <= worst and error.mean() <= mean, (error.max(), error.mean())


def test_inductor_compiled_blocks_equal_eager_on_cuda():
    """Inductor-compiled blocks (CUDA kernels) give the eager video within float32 rounding (TF32 off)."""
    def video(pipe):
        state = pipe.start(label=1, seed=0)
        return torch.cat([pipe.next_chunk(state).frames for _ in range(6)], dim=2)

    model = random_model(num_classes=3, prefix_frames=2).cuda()
    eager = video(LongVideoPipeline(model, steps=2, cfg_scale=1.5))
    compiled_model = compile_blocks(copy.deepcopy(model))
    pipe = LongVideoPipeline(compiled_model, steps=2, cfg_scale=1.5)
    warm_up(pipe, batch=1, label=1)
    assert (video(pipe) - eager).abs().max() <= 1e-3


def test_cached_passes_run_a_fused_sdpa_kernel(record_property):
    """A bf16 cached denoising step and commit pass call SDPA with no mask, so a fused kernel (flash, memory-efficient
    or cuDNN) runs, never the math fallback; the operators seen are recorded for the GPU report."""
    model = random_model(num_classes=3, prefix_frames=2, attention_backend="sdpa").cuda().to(torch.bfloat16)
    pipe = LongVideoPipeline(model, steps=1, cfg_scale=1.5)
    state = pipe.start(label=1, seed=0)
    for _ in range(3):
        pipe.next_chunk(state)  # past the first frame: the prefix and temporal caches are in use
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        pipe.next_chunk(state)
        torch.cuda.synchronize()
    names = {event.key for event in prof.key_averages()}
    fused = sorted(n for n in names if n in FUSED_SDPA)
    kernels = sorted(n for n in names if any(k in n.lower() for k in ("flash", "fmha", "cudnn", "attention")))
    record_property("sdpa_operators", ",".join(fused))
    record_property("attention_kernels", ",".join(kernels)[:2000])
    assert fused, sorted(names)
    assert "aten::_scaled_dot_product_attention_math" not in names
