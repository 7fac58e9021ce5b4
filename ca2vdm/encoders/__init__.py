"""Encoders: pretrained or trained networks that carry pixels or text into the spaces the video model reads; models,
not data. Codecs between pixels and the model's space (``codec``: pixels, or a diffusers autoencoder; ``wan_vae``:
Wan's video VAE, streamed chunk by chunk) and text encoders that turn prompts into token vectors (``text``: WordLlama,
transformers folders; ``umt5``: Wan's UMT5 prompts).

Imports only :mod:`ca2vdm.config`, :mod:`ca2vdm.runtime` and :mod:`ca2vdm.errors` (and their libraries: diffusers,
transformers, wordllama); data sets, models and everything above them use these.
"""
