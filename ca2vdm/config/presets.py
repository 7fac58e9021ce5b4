"""How the published causal Wan models are sampled, as our settings: the chunk and window layout (model fields) and
the sampler's settings each one's own inference code uses, for ``ca2vdm export`` of their weights
(:mod:`ca2vdm.checkpoints.formats`). Torch-free, so the command line offers them before torch loads.

Read from their public inference configs (docs/models.md): Self-Forcing samples chunks of 3 latent frames at 4 times
(1000, 750, 500, 250 warped by a shift of 5: our ``timesteps(4, 5)``), unguided, committing each chunk at
``context_noise`` 0, over a global window of 21 frames at absolute positions; LongLive keeps a 12-frame window of
which 3 are sinks. CausVid and Causal Forcing checkpoints share Self-Forcing's layout and format; their step counts
are given with ``sampler.steps``. ``wan`` is the bidirectional base run causally (a teacher to distil, not a
streaming model): 50 guided steps with Wan's 480p shift of 3.
"""
from __future__ import annotations

CAUSAL_WINDOW = dict(chunk_frames=3, first_frame_chunk=False, positions="absolute")
PRESETS: dict[str, dict[str, dict]] = {
    "self-forcing": {"model": dict(CAUSAL_WINDOW, max_context_frames=18, sink_frames=0),
                     "sampler": dict(steps=4, shift=5.0, cfg_scale=1.0, cond_noise=0.0)},
    "longlive": {"model": dict(CAUSAL_WINDOW, max_context_frames=9, sink_frames=3),
                 "sampler": dict(steps=4, shift=5.0, cfg_scale=1.0, cond_noise=0.0)},
    "wan": {"model": dict(CAUSAL_WINDOW, max_context_frames=18, sink_frames=0),
            "sampler": dict(steps=50, shift=3.0, cfg_scale=5.0, cond_noise=0.0)},
}
