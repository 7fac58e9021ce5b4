"""Checkpoint files: weights with their config in safetensors metadata (``weights``) and the typed, versioned
metadata they record (``metadata``: the model, the sampler settings, the codec, calibrations), and LoRA adapters
trained on a base checkpoint, checked against it and folded into its weights (``adapters``), and other projects'
weights (diffusers and Wan folders, Self-Forcing / CausVid / Causal Forcing / LongLive ``.pt``, LongLive's LoRA) read,
checked and exported as ours (``formats``); a downloaded Wan folder's parts (VAE, UMT5, tokenizer, sizes) found and
loaded (``wan_folder``), and tiny random ones written for tests and dry runs (``tiny_wan``).

Imports :mod:`ca2vdm.models`, :mod:`ca2vdm.io` and :mod:`ca2vdm.config`. A training run's checkpoint directories
(``step_N``, ``latest``, resume) belong to :mod:`ca2vdm.training`.
"""
