"""Compiled sampling: ``torch.compile`` of the transformer blocks for the denoising and commit passes.

What is compiled, and why not ``model.forward``
-----------------------------------------------
Compiling the whole forward recompiles on every chunk: the KV cache's write position and slots and the frame
offset are Python integers that change per chunk, and dynamo guards on each value until its recompile limit. Here
each block is compiled on its own (``nn.Module.compile``, as torchtitan does per block) and the cache's
bookkeeping (its ``EAGER_METHODS``; the DiT's KVCache: ``update``, ``prefix``, ``store_prefix``) runs eagerly
(``torch.compiler.disable``, applied here when compiling, so that a process that never compiles never imports
``torch._dynamo``), so the compiled code sees only tensors. The block index, an integer attribute that differs per
block, is left unspecialised (``allow_unspec_int_on_nn_module``), so all blocks share one set of graphs. What still
changes is the number of visible conditioning frames while the window fills: dynamo marks that size dynamic after its
first change (automatic dynamic shapes). The number of graphs is therefore bounded, whatever the number of chunks
(``tests/test_compile.py`` counts them).

Compiling happens lazily, at the first call of each shape; :func:`warm_up` runs a throwaway video through every
shape a video takes (the first frame, the window filling, the full window) so that it happens once per process,
before the first real chunk, and its seconds can be reported apart from sampling.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ca2vdm.models.base import CausalVideoModel
from ca2vdm.models.registry import spec_of
from ca2vdm.sampling.pipeline import LongVideoPipeline


def _cache_bookkeeping_eager(cache: type) -> None:
    """Make a context cache's bookkeeping methods run eagerly inside compiled code (once per process)."""
    for name in cache.EAGER_METHODS:
        method = getattr(cache, name)
        if not getattr(method, "_torchdynamo_disable", False):
            setattr(cache, name, torch.compiler.disable(method))


def compile_blocks(model: CausalVideoModel, backend: str = "inductor") -> CausalVideoModel:
    """Compile every transformer block of ``model`` in place with ``backend`` (inductor; ``aot_eager`` traces the
    same graphs without code generation, for quick checks of graph breaks and guards); idempotent; returns the
    model."""
    torch._dynamo.config.allow_unspec_int_on_nn_module = True  # one set of graphs for all blocks (block index)
    _cache_bookkeeping_eager(spec_of(model.cfg).cache)
    for block in model.repeated_blocks():
        if getattr(block, "_compiled_call_impl", None) is None:
            block.compile(backend=backend)
    return model


def is_compiled(model: CausalVideoModel) -> bool:
    """Whether :func:`compile_blocks` was applied to ``model``."""
    return all(getattr(block, "_compiled_call_impl", None) is not None for block in model.repeated_blocks())


def warm_up_chunks(model: CausalVideoModel) -> int:
    """Chunks a video needs before every pass has its final shape: the first frame, the window filling, one full."""
    cfg = model.cfg
    return int(cfg.first_frame_chunk) + -(-cfg.max_context_frames // cfg.chunk_frames) + 1


@torch.no_grad()
def warm_up(pipe: LongVideoPipeline, batch: int = 1, label: int | None = None,
            prompt: str | None = None) -> float:
    """Run a throwaway one-step video of :func:`warm_up_chunks` chunks with ``batch`` videos (and ``label`` or
    ``prompt``: guidance batches the rows) through ``pipe``, so that its compiled blocks compile now; return the
    seconds it took.

    ``pipe`` itself is left as it was: the throwaway video runs one step per chunk, without a step cache, on a
    pipeline of its own (the graphs depend on neither: t is a tensor, and a policy's reuse skips whole stacks)."""
    warm = LongVideoPipeline(pipe.model, replace(pipe.settings, steps=1, step_cache="none", step_cache_options={}),
                             pixel_space=pipe.pixel_space, text_encoder=pipe.text_encoder)
    tic = time.perf_counter()
    state = warm.start(batch=batch, label=label, seed=0, prompt=prompt)
    for _ in range(warm_up_chunks(pipe.model)):
        warm.next_chunk(state)
    if pipe.model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic
