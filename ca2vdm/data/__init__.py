"""Training data and the space the model works in: folders of videos as clips (``clips``), latent shards
(``latents``, written by ``latent_encoding``), a teacher's recorded trajectories (``trajectories``, for distillation),
the synthetic shapes data (``synthetic``; captioned: ``captioned``), caption manifests (``captions``), text encoders
that turn prompts into token vectors (``text``), and codecs between pixels and the model's space (``codec``: pixels,
or a per-frame diffusers autoencoder).

Imports :mod:`ca2vdm.io`, :mod:`ca2vdm.config` and :mod:`ca2vdm.errors`; never the model or anything above it.
"""
