"""What a prompt costs (``ca2vdm eval prompts``): seconds per chunk of a text model against a label model of the same
sizes, with the window full and guidance on (the median over interleaved repeats), their analytic FLOPs, and a prompt
switch's re-cache in seconds and FLOPs against a chunk's.
"""
from __future__ import annotations

import statistics
import time

from ca2vdm.generation.api import Pipeline
from ca2vdm.models.flops import forward_flops


def chunk_seconds(pipe: Pipeline, condition: dict, chunks: int) -> tuple[list[float], object]:
    """Seconds of each of ``chunks`` chunks of one video under ``condition`` (prompt= or label=), and its state."""
    lvp = pipe.sampler
    state = lvp.start(seed=0, **condition)
    times = []
    for _ in range(chunks):
        tic = time.perf_counter()
        lvp.next_chunk(state)
        times.append(time.perf_counter() - tic)
    return times, state


def cost(text_pipe: Pipeline, label_pipe: Pipeline | None, repeats: int, chunks: int) -> dict:
    """Seconds per chunk once the window is full (text vs label model, guided), interleaved; a re-cache's seconds."""
    cfg = text_pipe.model.cfg
    full = -(-cfg.max_context_frames // cfg.chunk_frames)  # chunks before the window is full
    text, label, switch = [], [], []
    for _ in range(repeats):
        times, state = chunk_seconds(text_pipe, {"prompt": "a red circle"}, chunks)
        text += times[full:]
        tic = time.perf_counter()
        text_pipe.sampler.switch(state, prompt="a blue square")
        switch.append(time.perf_counter() - tic)
        label += chunk_seconds(label_pipe, {"label": 0}, chunks)[0][full:] if label_pipe else []
    window, L = cfg.max_context_frames, cfg.chunk_frames
    chunk_flops = (text_pipe.settings.steps + 1) * forward_flops(cfg, L, window + L)  # denoising steps + commit
    recache_flops = sum(forward_flops(cfg, stop - start, stop) for start, stop in cfg.layout.spans(0, window))
    out = {"text_chunk_seconds": statistics.median(text), "recache_seconds": statistics.median(switch),
           "recache_over_chunk": statistics.median(switch) / statistics.median(text),
           "recache_flops_over_chunk": recache_flops / chunk_flops,
           "recache_flops_over_window_commit": recache_flops / forward_flops(cfg, window, window),
           "commit_passes_in_recache": len(cfg.layout.spans(0, window))}
    if label:
        lcfg = label_pipe.model.cfg
        out.update(label_chunk_seconds=statistics.median(label),
                   text_over_label=statistics.median(text) / statistics.median(label),
                   text_over_label_flops=forward_flops(cfg, L, window + L) / forward_flops(lcfg, L, window + L))
    return out
