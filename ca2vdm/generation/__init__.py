"""Generation from a checkpoint: the Python API (``api``: ``load_pipeline``, chunks as pixels, ``write_video``), a
generation in progress and its prompt switches (``stream``), videos written to files with stats and contact sheets
(``video_files``), given videos streamed in (``given``), and many videos split across processes (``many``).

Where checkpoints, codecs and the sampler meet files. Imports :mod:`ca2vdm.sampling`, :mod:`ca2vdm.checkpoints`,
:mod:`ca2vdm.data` (codecs, text encoders), :mod:`ca2vdm.io` and the layers below; never training, the server or a
command line.
"""
