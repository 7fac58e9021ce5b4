"""How the published causal Wan models are sampled, as our settings: the chunk and window layout (model fields) and
the sampler's settings each one's own inference code uses, for ``ca2vdm export`` of their weights
(:mod:`ca2vdm.checkpoints.formats`) and for generating from a downloaded folder (``ca2vdm generate --base``).
Torch-free, so the command line offers them before torch loads.

Read from their public inference configs (docs/models.md): Self-Forcing samples chunks of 3 latent frames at 4 times
(1000, 750, 500, 250 warped by a shift of 5: our ``timesteps(4, 5)``), unguided, committing each chunk at
``context_noise`` 0, over a global window of 21 frames at absolute positions; CausVid the same in 3 steps; LongLive
keeps a 12-frame window of which 3 are sinks. Causal Forcing checkpoints share Self-Forcing's layout and format.
``wan`` is the bidirectional base run causally (a teacher to distil, not a streaming model): 50 guided steps with
Wan's 480p shift of 3.

The known-model table (:data:`KNOWN_MODELS`) names the preset of a checkpoint by its file name, as the projects
publish them (``self_forcing_dmd.pt``, ``causvid_*.pt``, ``longlive_base.pt``); :func:`preset_for` applies it.
"""
from __future__ import annotations

from pathlib import PurePath

CAUSAL_WINDOW = dict(chunk_frames=3, first_frame_chunk=False, positions="absolute")
FEW_STEPS = dict(steps=4, shift=5.0, cfg_scale=1.0, cond_noise=0.0)
PRESETS: dict[str, dict[str, dict]] = {
    "self-forcing": {"model": dict(CAUSAL_WINDOW, max_context_frames=18, sink_frames=0), "sampler": FEW_STEPS},
    "causvid": {"model": dict(CAUSAL_WINDOW, max_context_frames=18, sink_frames=0), "sampler": dict(FEW_STEPS,
                                                                                                     steps=3)},
    "longlive": {"model": dict(CAUSAL_WINDOW, max_context_frames=9, sink_frames=3), "sampler": FEW_STEPS},
    "wan": {"model": dict(CAUSAL_WINDOW, max_context_frames=18, sink_frames=0),
            "sampler": dict(steps=50, shift=3.0, cfg_scale=5.0, cond_noise=0.0)},
}
# (a word in the checkpoint's file name, lower case, "-" read as "_"; its preset), the first match wins
KNOWN_MODELS: tuple[tuple[str, str], ...] = (
    ("longlive", "longlive"), ("causvid", "causvid"), ("causal_forcing", "self-forcing"),
    ("self_forcing", "self-forcing"),
)


def preset_for(checkpoint: str | PurePath | None, lora: bool = False) -> str:
    """The preset of another project's weights: ``longlive`` with a LoRA to fold in (LongLive's ``lora.pt``), else
    by the known-model table from the file name, else ``self-forcing`` for any other ``.pt`` (a causal student) and
    ``wan`` for Wan's own weights (no checkpoint: the base folder's transformer)."""
    if lora:
        return "longlive"
    if checkpoint is None:
        return "wan"
    name = PurePath(checkpoint).name.lower().replace("-", "_")
    known = next((preset for word, preset in KNOWN_MODELS if word in name), None)
    return known or ("self-forcing" if PurePath(checkpoint).suffix in (".pt", ".pth") else "wan")
