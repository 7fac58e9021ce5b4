"""The command lines: each entry point's parser and ``main`` (``generate``, ``serve``, ``train``,
``train_autoencoder``), the options they share (``args``) and the trainers' shared front end (``trainer``).

The top layer: it may import anything, and nothing imports it. Parsers are built from torch-free types
(:mod:`ca2vdm.config`) and parse before the heavy imports, so ``--help`` answers at once. Library errors name
settings as the API spells them; here they become flags (:meth:`ca2vdm.errors.SettingError.as_flag`).
"""
