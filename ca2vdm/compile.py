"""Compiled sampling: ``torch.compile`` of the transformer blocks for the denoising and commit passes.

What is compiled, and why not ``model.forward``
-----------------------------------------------
Compiling the whole forward recompiles on every chunk: the KV cache's write position and slots and the frame
offset are Python integers that change per chunk, and dynamo guards on each value until its recompile limit. Here
each block is compiled on its own (``nn.Module.compile``, as torchtitan does per block) and the cache's
bookkeeping (:meth:`KVCache.update`, ``prefix``, ``store_prefix``) runs eagerly (``torch.compiler.disable``), so the
compiled code sees only tensors. The block index, an integer attribute that differs per block, is left
unspecialised (``allow_unspec_int_on_nn_module``), so all blocks share one set of graphs. What still changes is the
number of visible conditioning frames while the window fills: dynamo marks that size dynamic after its first change
(automatic dynamic shapes). The number of graphs is therefore bounded, whatever the number of chunks
(``tests/test_compile.py`` counts them).

Compiling happens lazily, at the first call of each shape; :func:`warm_up` runs a throwaway video through every
shape a video takes (the first frame, the window filling, the full window) so that it happens once per process,
before the first real chunk, and its seconds can be reported apart from sampling.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from .model import CausalVideoDiT

if TYPE_CHECKING:  # the pipeline imports this module
    from .pipeline import LongVideoPipeline


def compile_blocks(model: CausalVideoDiT, backend: str = "inductor") -> CausalVideoDiT:
    """Compile every transformer block of ``model`` in place with ``backend`` (inductor; ``aot_eager`` traces the
    same graphs without code generation, for quick checks of graph breaks and guards); idempotent; returns the
    model."""
    torch._dynamo.config.allow_unspec_int_on_nn_module = True  # one set of graphs for all blocks (block index)
    for block in model.stack.blocks:
        if getattr(block, "_compiled_call_impl", None) is None:
            block.compile(backend=backend)
    return model


def is_compiled(model: CausalVideoDiT) -> bool:
    """Whether :func:`compile_blocks` was applied to ``model``."""
    return all(getattr(block, "_compiled_call_impl", None) is not None for block in model.stack.blocks)


def warm_up_chunks(model: CausalVideoDiT) -> int:
    """Chunks a video needs before every pass has its final shape: the first frame, the window filling, one full."""
    cfg = model.cfg
    return int(cfg.first_frame_chunk) + -(-cfg.max_context_frames // cfg.chunk_frames) + 1


@torch.no_grad()
def warm_up(pipe: LongVideoPipeline, batch: int = 1, label: int | None = None) -> float:
    """Run a throwaway one-step video of :func:`warm_up_chunks` chunks with ``batch`` videos (and ``label``: guidance
    batches the rows) through ``pipe``, so that its compiled blocks compile now; return the seconds it took.

    The pipeline's settings are restored; a step-caching policy starts every chunk afresh anyway."""
    steps, pipe.steps = pipe.steps, 1  # the graphs do not depend on the number of steps (t is a tensor)
    try:
        tic = time.perf_counter()
        state = pipe.start(batch=batch, label=label, seed=0)
        for _ in range(warm_up_chunks(pipe.model)):
            pipe.next_chunk(state)
        if pipe.model.x_embedder.weight.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - tic
    finally:
        pipe.steps = steps
