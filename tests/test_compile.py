"""Compiled sampling (ca2vdm/compile.py): equal to eager, compiled once, graphs bounded over chunks."""
import torch
from torch._dynamo.utils import counters

from ca2vdm.sampling.compile import compile_blocks, is_compiled, warm_up, warm_up_chunks
from ca2vdm.sampling.pipeline import LongVideoPipeline

from helpers import random_model

CHUNKS = 8  # the first frame, 2 chunks while the 5-frame window fills, then 5 chunks with the window full


def video(pipe: LongVideoPipeline, chunks: int = CHUNKS) -> torch.Tensor:
    state = pipe.start(label=1, seed=0)
    return torch.cat([pipe.next_chunk(state).frames for _ in range(chunks)], dim=2)  # (1, C, T, H, W)


def test_compiled_blocks_equal_eager_and_compile_once():
    """Compiled blocks give the eager video (guided, cached passes and commits) within float tolerance; every graph
    is compiled during the warm-up, so the chunks after it, past the window filling, compile nothing.

    The backend is aot_eager: the same dynamo graphs, breaks and guards as inductor (which decide the recompiles),
    without inductor's code generation, which takes minutes on CI's CPUs for the ~20 graphs; inductor is compared
    with eager by ``scripts/bench/ar_scaling.py --compile`` here and by the CUDA tests (``tests/cuda``)."""
    torch._dynamo.reset()
    eager = video(LongVideoPipeline(random_model(num_classes=3), steps=2, cfg_scale=1.5))
    model = compile_blocks(random_model(num_classes=3), backend="aot_eager")
    pipe = LongVideoPipeline(model, steps=2, cfg_scale=1.5)
    assert is_compiled(model) and counters["stats"]["unique_graphs"] == 0  # compiled lazily: nothing traced yet
    warm_up(pipe, batch=1, label=1)
    assert warm_up_chunks(model) == 1 + 3 + 1
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0  # the warm-up really sent the blocks through dynamo
    compiled = video(pipe)
    assert counters["stats"]["unique_graphs"] == graphs  # no recompiles: positions and slots are not guarded
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
    assert pipe.settings.steps == 2  # the warm-up's one-step videos leave the pipeline as it was
