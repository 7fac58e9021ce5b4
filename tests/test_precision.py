"""ca2vdm/precision.py and the --dtype / --device auto options of infer/long_video.py: half-precision weights and KV
cache, with rotary phases, softmax statistics and the sampler's state in float32. Tiny random models on the CPU."""
import copy
import json

import pytest
import torch

from ca2vdm.checkpoints.metadata import CheckpointMetadata
from ca2vdm.runtime.device import resolve_dtype
from ca2vdm.sampling.pipeline import STATE_DTYPE, LongVideoPipeline

from helpers import cli, cli_error, random_model


def _generate(model, mode: str, seed: int = 3) -> torch.Tensor:
    """4 chunks (frames 0..6: tiny's window of 5 frames is not yet full, so kv equals recomputation), guided."""
    pipe = LongVideoPipeline(model, steps=4, cfg_scale=2.5, cache=mode)
    return torch.cat([c.frames for c in pipe.generate(4, batch=2, label=1, seed=seed)], dim=2)  # (2, 3, 7, 16, 16)


# Tolerances on frames in [-1, 1]. Every weight, activation and cached key is rounded to the format once per
# operation; a pass stacks a few dozen such roundings, mostly averaging out. bf16 keeps 8 significant bits (unit
# roundoff u = 2**-8 = 0.0039): we allow 10 u at the worst pixel and 1 u on average (measured on 3 weight seeds:
# 0.011-0.014 and 0.0012). fp16 keeps 11 bits (u = 2**-11): the same multiples of its u (measured: 0.0015, 0.00016).
TOLERANCES = {torch.bfloat16: (10 * 2 ** -8, 2 ** -8), torch.float16: (10 * 2 ** -11, 2 ** -11)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_cached_generation_matches_fp32_recomputation(dtype):
    """Cached generation with weights and KV cache in bf16 (fp16) against recomputing the window at every step in
    fp32, same seed: within the format's rounding, while a different seed changes the video entirely."""
    model = random_model(num_classes=3, prefix_frames=2)
    reference = _generate(model, "none")
    half = copy.deepcopy(model).to(dtype)
    cached = _generate(half, "kv")
    assert cached.dtype == STATE_DTYPE and cached.shape == (2, 3, 7, 16, 16)
    error = (cached - reference).abs()
    worst, mean = TOLERANCES[dtype]
    assert error.max() <= worst and error.mean() <= mean, (error.max(), error.mean())
    assert error.max() > 0  # the weights really are in half precision
    other_seed = (_generate(model, "none", seed=4) - reference).abs()
    assert other_seed.mean() > 10 * mean and other_seed.max() > 10 * worst  # the tolerance discriminates


def test_a_cast_keeps_rotary_tables_in_fp32_and_puts_the_cache_in_the_weights_dtype():
    model = random_model()
    cos, sin = model.rope_cos.clone(), model.rope_sin.clone()
    model.to(torch.bfloat16)
    assert model.x_embedder.weight.dtype == torch.bfloat16
    assert torch.equal(model.rope_cos, cos) and torch.equal(model.rope_sin, sin)  # float32, not rounded
    cache = model.new_cache(batch=1)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16
    model.float()
    assert model.rope_cos.dtype == torch.float32 and torch.equal(model.rope_cos, cos)


def test_dtype_defaults_to_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == resolve_dtype(None, torch.device("cuda", 1)) == torch.bfloat16
    assert resolve_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype=fp8: not supported; use fp32, bf16, fp16"):
        resolve_dtype("fp8", "cpu")


@pytest.mark.parametrize("argv, dtype", [([], None), (["--dtype", "bf16"], "bf16")])
def test_cli_records_device_and_dtype(checkpoint, tmp_path, argv, dtype):
    """--device defaults to auto (CUDA when present, else the CPU) and --dtype to bf16 on CUDA, fp32 on the CPU;
    both are in the stats."""
    stats = tmp_path / "stats.json"
    cli.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "v.mp4"), "--chunks", "1", "--stats",
              str(stats), *argv])
    recorded = json.loads(stats.read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert (recorded["device"], recorded["dtype"]) == (device, dtype or {"cuda": "bf16", "cpu": "fp32"}[device])


def test_cli_refuses_an_unknown_dtype(checkpoint, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    text = cli_error(capsys, "--checkpoint", checkpoint, "--out", out, "--dtype", "fp8")
    assert "--dtype" in text and "fp8" in text and "bf16" in text and "Traceback" not in text
    assert not out.exists()


def test_bench_precision_teacher_forces_every_precision_on_the_fp32_chunks():
    """The lockstep of scripts/bench/precision.py (ca2vdm/evaluation/lockstep.py): every precision's chunk i is
    conditioned on fp32's chunks before i (so a chunk's difference is one chunk's rounding); the cache halves at 16
    bits. No timing is asserted."""
    from ca2vdm.evaluation.lockstep import measure_precisions

    model = random_model(num_classes=3, prefix_frames=2)
    meta = CheckpointMetadata.from_raw({"diffusion_config": {"steps": 3}}, model.cfg)
    summary, rows = measure_precisions(model, meta, ["bf16", "fp32"], chunks=3, label=1, seed=0)
    assert list(summary) == ["fp32", "bf16"] and [len(r) for r in rows.values()] == [4, 4]  # first frame + 3
    assert summary["fp32"]["max_abs_vs_fp32"] == 0
    assert 0 < summary["bf16"]["max_abs_vs_fp32"] <= TOLERANCES[torch.bfloat16][0]
    assert summary["bf16"]["kv_cache_bytes"] * 2 == summary["fp32"]["kv_cache_bytes"]
    assert model.x_embedder.weight.dtype == torch.float32  # each precision ran on its own copy
