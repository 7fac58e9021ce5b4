"""The command lines: the ``ca2vdm`` command (``main``: one subcommand per tool, as ``accelerate`` and
``huggingface-cli`` have) and each tool's parser and ``main(argv, prog)``, one module per tool: ``generate``,
``serve``, ``train``, ``distill``, ``train_autoencoder`` (also the console scripts ``ca2vdm-*`` and the entry points in
``infer/`` and ``train/``), ``calibrate``, ``encode_latents``, ``export``, ``merge_lora``, ``make_data``,
``make_ode_pairs``, ``train_detector``, ``eval_quality``, ``eval_prompts``, ``eval_long_video``; the options they share
(``args``) and the trainers' shared front end (``trainer``).

The top layer: it may import anything, and nothing imports it. Parsers are built from torch-free types
(:mod:`ca2vdm.config`) and parse before the heavy imports, so ``--help`` answers at once. Library errors name
settings as the API spells them; here they become flags (:meth:`ca2vdm.errors.SettingError.as_flag`).
"""
