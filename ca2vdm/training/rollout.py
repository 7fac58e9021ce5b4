"""Self-rollout: training on the model's own generated context (the idea of Self-Forcing, arXiv 2506.08009).

At inference every chunk is conditioned on frames the model made, with their errors; with teacher forcing the model
only ever sees real frames, so small errors (a shape a little smaller, a little darker) compound over hundreds of
chunks. For a share ``diffusion.self_rollout`` of the training steps, :func:`rollout_context` replaces a clip's
conditioning frames by the model's own samples, made exactly as at inference (the KV-cache pipeline, chunk by
chunk, each conditioned on the samples before it), while the loss target stays the real chunk: the model learns to
continue its own imperfect context towards the data.

Self-Forcing rolls out freely and trains with a distribution-matching loss against a teacher. We have no teacher, so
a free rollout that leaves the real clip's motion is asked to jump back to the real chunk. Each rolled-out chunk
therefore starts from the real chunk perturbed to ``diffusion.rollout_t`` (SDEdit). 1 (the default) is a free
rollout from the first frame. Lower values keep the real trajectory and let only the model's own errors (detail,
colour, size) accumulate. Measured at 200 chunks on 12 seeds (docs/benchmarks.md), neither helps yet: the free
rollout met the most drift goals only by ignoring its context (its chunks jump at every seam, 2.6x the in-chunk
change), and the anchored one (0.6) jumped less but vanished more. A target consistent with the rolled-out context
(a teacher) is what is missing; off by default.
"""
from __future__ import annotations

import torch

from ca2vdm.config import SamplerSettings
from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.models.base import CausalVideoModel
from ca2vdm.sampling.pipeline import LongVideoPipeline


def given_frames(model_cfg) -> int:
    """Frames of a training clip that stay real in a rollout: the first chunk, or the sinks if longer."""
    return max(model_cfg.layout.next_length(0), model_cfg.sink_frames)


@torch.no_grad()
def rollout_context(model: CausalVideoModel, video: torch.Tensor, labels: torch.Tensor | None, num_cond: int, *,
                    start_t: float, steps: int, shift: float, cond_noise: float, seed: int,
                    pixel_space: bool = True, text: TextEmbeddings | None = None) -> torch.Tensor:
    """``video`` with its frames from :func:`given_frames` up to ``num_cond`` (a chunk boundary) replaced by the
    model's samples, chunk by chunk through the KV-cache pipeline; frames from ``num_cond`` on stay real.

    video: (B, C, T, H, W) in the model's space. labels: (B,) per row (the null label allowed) or None.
    Each chunk is denoised in ``steps`` Euler steps from the real chunk perturbed to ``start_t``, with the noise of
    a generator seeded by ``seed``; ``pixel_space`` as in the pipeline. text: a text model's prompts
    (:class:`~ca2vdm.encoders.text.TextEmbeddings`, one per row, the empty prompt allowed). The model is left as it was
    (its mode too).
    """
    given = given_frames(model.cfg)
    if num_cond <= given:
        return video
    pipe = LongVideoPipeline(model, SamplerSettings(steps=steps, shift=shift, cond_noise=cond_noise),
                             pixel_space=pixel_space)
    state = pipe.start(batch=video.shape[0], label=labels, seed=seed, first_frames=video[:, :, :given], prompt=text)
    parts = [video[:, :, :given]]
    while state.frames < num_cond:
        real = video[:, :, state.frames:state.frames + model.cfg.chunk_frames]
        parts.append(pipe.next_chunk(state, start_from=real, start_t=start_t).frames.to(video.dtype))
    if state.frames != num_cond:
        raise ValueError(f"num_cond={num_cond} is not a chunk boundary of the model's layout")
    return torch.cat(parts + [video[:, :, num_cond:]], dim=2)
