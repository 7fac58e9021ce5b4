"""Sampling in the model's space: rectified flow's schedule and Euler sampler (``flow``), the autoregressive loop over
chunks with the shared KV cache and label / prompt switches (``pipeline``) and the passes it counts
(``evaluations``), what a video is conditioned on (``conditioning``: labels, prompts, guidance rows), step caches
that skip denoising passes inside a chunk (``step_cache/``) and compiled sampling (``compile``).

No files, no codecs, no command lines: frames are tensors in the model's space. Imports :mod:`ca2vdm.models`,
:mod:`ca2vdm.checkpoints` (a checkpoint's recorded settings), :mod:`ca2vdm.config` and :mod:`ca2vdm.errors`.
"""
