"""The model: the causal spatial-temporal DiT (``dit``), its attention kernels, block-causal masks and periodic rotary
positions (``attention``, ``flex``), cross-attention to a text model's prompt (``cross_attention``), the bounded KV
cache of conditioning frames (``kv_cache``), the hooks through which inference-time caches wrap the block stack
(``hooks``), analytic FLOPs (``flops``) and LoRA layers injected into a finished model through peft (``lora``); the
model families by ``model.arch`` (``registry``), among them the causal Wan 2.1 transformer (the ``wan`` folder).

The model knows nothing of sampling, step caches, sharding or compiling: those wrap a finished model from above.
Imports only :mod:`ca2vdm.config`, :mod:`ca2vdm.errors` and :mod:`ca2vdm.encoders.text` (the prompts' token vectors)
(and peft, in ``lora`` alone; diffusers, in the ``wan`` family, imported only when a Wan model is built).
"""
