"""Measuring generated video: quality and drift metrics on frames (``metrics``), reference-free quality: the
Frechet distance (``frechet``) in a detector's feature space (``detector``: ours, trained by ``detector_training``,
or a TorchScript I3D), per chunk, with the class accuracy (``quality``), and a video's colour and shape read back
against its prompt (``prompt_adherence``).

Imports :mod:`ca2vdm.generation` and the layers below it; used by the evaluation scripts and by training (the
autoencoder's held-out PSNR).
"""
