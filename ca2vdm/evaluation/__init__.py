"""Measuring generated video: quality and drift metrics on frames (``metrics``).

Imports :mod:`ca2vdm.generation` and the layers below it; used by the evaluation scripts and by training (the
autoencoder's held-out PSNR).
"""
