"""The causal Wan 2.1 family (``model.arch=wan``): diffusers' ``WanTransformer3DModel`` with its exact module tree and
parameter names, run block-causally over chunks of latent frames (``model``), its attention processors: joint 3-D
self-attention under the block-causal mask or over the cached frames, cross-attention to a prompt's K/V made once
(``processors``), the block stack as step caches see it (``stack``), Wan's 3-D RoPE at any frame position (``rope``),
its bounded cache of frame slots with absolute or ring positions (``cache``) and the weight formats users hold mapped
onto its names (``formats``).

Part of the models room: imports :mod:`ca2vdm.config`, :mod:`ca2vdm.errors`, :mod:`ca2vdm.encoders.text`, the
models room's interface, attention kernels and hooks, and diffusers. diffusers is imported only by ``model``,
``processors``, ``rope`` and inside ``formats``' functions: the registry imports ``cache`` alone, so naming the family
costs nothing until a Wan model is built.
"""
