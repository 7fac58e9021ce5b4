"""Generation from a checkpoint: the Python API (``api``: ``load_pipeline``, chunks as pixels, ``write_video``), a
generation in progress and its prompt switches (``stream``), videos written to files with stats and contact sheets
(``video_files``), given videos streamed in (``given``), many videos split across processes (``many``), a pipeline from
a downloaded Wan folder and any transformer checkpoint (``wan_base``) and its peak GPU memory estimated before any
weight is read (``wan_memory``).

Where checkpoints, codecs and the sampler meet files. Imports :mod:`ca2vdm.sampling`, :mod:`ca2vdm.checkpoints`,
:mod:`ca2vdm.data` (codecs, text encoders), :mod:`ca2vdm.io` and the layers below; never training, the server or a
command line.
"""
