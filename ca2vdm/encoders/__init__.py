"""Encoders: pretrained or trained networks that carry pixels or text into the spaces the video model reads; models,
not data. Codecs between pixels and the model's space (``codec``: pixels, or a diffusers autoencoder) and text
encoders that turn prompts into token vectors (``text``: WordLlama, transformers folders).

Imports only :mod:`ca2vdm.config` and :mod:`ca2vdm.errors` (and their libraries: diffusers, transformers,
wordllama); data sets, models and everything above them use these.
"""
