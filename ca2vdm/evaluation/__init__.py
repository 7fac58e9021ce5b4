"""Measuring generated video: quality and drift metrics on frames (``metrics``); a long video's drift chunk by chunk
against the training data (``drift``) and the drift bar over it (``drift_summary``), with the seams between chunks
(``seams``); reference-free quality: the Frechet distance (``frechet``) in a detector's feature space (``detector``:
ours, trained by ``detector_training``, or a TorchScript I3D), per chunk, with the class accuracy (``quality``); a
video's colour and shape read back against its prompt (``prompt_adherence``), prompt switches (``prompt_switches``)
and what a prompt costs (``prompt_cost``); step-cache calibration fits (``calibration``); generation modes timed in
lockstep for the benchmarks (``lockstep``).

Imports :mod:`ca2vdm.generation` and the layers below it; used by the ``ca2vdm calibrate`` and ``ca2vdm eval ...``
command lines, the benchmarks in ``scripts/bench/`` and by training (the autoencoder's held-out PSNR).
"""
