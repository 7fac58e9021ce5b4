"""The peak GPU memory of a Wan generation, estimated from the configs before any weight is loaded, and the check
that refuses a GPU too small for it in one line naming the fix (``dtype bf16``, ``offload_text_encoder``).

From the configs alone: the transformer, the text encoder (UMT5) and the VAE are built on PyTorch's meta device to
count their parameters (the modules diffusers and transformers keep in float32 counted at 4 bytes), and the VAE's
decoder runs one chunk on meta tensors to size its carried feature cache and its largest activation. Then:

* KV cache: (window + sinks) latent frames x tokens per frame x width x 2 (K, V) x blocks x bytes x rows;
* prompt K/V: text tokens x width x 2 x blocks x bytes x rows (computed once per prompt);
* the transformer's activations for one chunk (tokens S = chunk_frames x tokens per frame): the float32 residual
  stream and per-token modulation (S x 6 x width), the FFN's hidden layer twice (S x ffn_dim), q/k/v/out and one
  block's keys and values over the window;
* the VAE's decoding of one chunk: its feature cache + ACTIVATION_COPIES x its largest activation (one latent frame
  per decoder call) + the chunk's float32 pixels;
* the text encoder: resident (its weights beside everything), or offloaded after encoding (on the GPU only while a
  prompt is encoded, beside the transformer and the VAE).

Peak = the larger of encoding and generation; denoising and decoding take turns, so their activations do not add.
Estimates: the allocator's fragmentation and CUDA's context (~0.5 GiB, :data:`CONTEXT_BYTES`) come on top; a run's
``--stats`` (``peak_gpu_mb``, CUDA's max allocated) is the measurement.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ca2vdm.config import ModelConfig
from ca2vdm.errors import SettingError, opt

BYTES = {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4}
ACTIVATION_COPIES = 4  # tensors of the largest activation's size alive at once in a decoder call (x, norm, conv, skip)
CONTEXT_BYTES = 2 ** 29  # CUDA's context and the allocator's slack, added before comparing with a card's memory
GIB = 2 ** 30


@dataclass(frozen=True)
class WanMemory:
    """Bytes of every part of a Wan generation (:attr:`parts`), the parameters of its three networks, and the peaks
    with the text encoder resident or offloaded after encoding."""
    parts: dict[str, int]
    parameters: dict[str, int]  # transformer, vae, text_encoder

    @property
    def resident(self) -> int:
        p = self.parts
        return self._generating + p["text_encoder_weights"]

    @property
    def offloaded(self) -> int:
        p = self.parts
        encoding = p["transformer_weights"] + p["vae_weights"] + p["text_encoder_weights"] + p["text_encoding"]
        return max(self._generating, encoding)

    def peak(self, offload: bool) -> int:
        return self.offloaded if offload else self.resident

    @property
    def _generating(self) -> int:
        p = self.parts
        resident = p["transformer_weights"] + p["vae_weights"] + p["kv_cache"] + p["prompt_kv"]
        return resident + max(p["transformer_activations"], p["vae_feature_cache"] + p["vae_activations"])


def weight_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of a model's weights in ``dtype`` as ``from_pretrained`` (and our casts) leave them: the modules the
    library keeps in float32 (diffusers: ``_keep_in_fp32_modules`` in bf16 and fp16; transformers: those in fp16 only,
    and ``_keep_in_fp32_modules_strict`` in both) count 4 bytes a parameter."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or []) if dtype != torch.float32 else set()
    if hasattr(model, "_keep_in_fp32_modules_strict"):  # a transformers model
        keep = (keep if dtype == torch.float16 else set()) | set(model._keep_in_fp32_modules_strict or [])
    return sum(p.numel() * (4 if any(part in keep for part in name.split(".")) else BYTES[dtype])
               for name, p in model.named_parameters())


def vae_decode_bytes(vae: torch.nn.Module, latent_hw: tuple[int, int], chunk_frames: int,
                     dtype: torch.dtype) -> tuple[int, int]:
    """The decoder's feature cache after one chunk and its activations, run on meta tensors (bytes)."""
    largest = [0]

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel())

    hooks = [m.register_forward_hook(record) for m in vae.decoder.modules()]
    feat = [None] * vae._cached_conv_counts["decoder"]
    x = torch.zeros(1, vae.config.z_dim, 1, *latent_hw, device="meta")
    with torch.no_grad():
        for i in range(chunk_frames + 1):  # the first latent frame, then a chunk's worth in steady state
            vae.decoder(vae.post_quant_conv(x), feat_cache=feat, feat_idx=[0], first_chunk=i == 0)
    for hook in hooks:
        hook.remove()
    cache = sum(f.numel() for f in feat if isinstance(f, torch.Tensor))
    return cache * BYTES[dtype], ACTIVATION_COPIES * largest[0] * BYTES[dtype]


def estimate(cfg: ModelConfig, vae_config: dict, text_config: dict, dtype: torch.dtype, rows: int = 1) -> WanMemory:
    """The parts of a generation of ``cfg`` (an ``arch: wan`` model; its frame size is the latents') with the VAE of
    ``vae_config`` and the UMT5 of ``text_config``, everything in ``dtype``, for ``rows`` rows (videos x guidance
    branches)."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    from ca2vdm.models.registry import build_model

    with torch.device("meta"):  # a folder's config.json may hold keys another version does not take: from_config
        transformer, vae = build_model(cfg), AutoencoderKLWan.from_config(dict(vae_config)).eval()
        text = UMT5EncoderModel(UMT5Config.from_dict(dict(text_config)))
    b, width, blocks = BYTES[dtype], cfg.hidden_size, cfg.depth
    tokens = (cfg.resolution // cfg.patch_size) * (cfg.frame_width // cfg.patch_size)  # per latent frame
    chunk, slots = cfg.chunk_frames * tokens, cfg.max_context_frames + cfg.chunk_frames
    factor = vae.config.scale_factor_spatial
    cache, activations = vae_decode_bytes(vae, (cfg.resolution, cfg.frame_width), cfg.chunk_frames, dtype)
    pixels = 4 * cfg.chunk_frames * 3 * cfg.resolution * factor * cfg.frame_width * factor * 4  # float32 frames
    parts = {
        "transformer_weights": weight_bytes(transformer, dtype),
        "vae_weights": weight_bytes(vae, dtype),
        "text_encoder_weights": weight_bytes(text, dtype),
        "kv_cache": slots * tokens * width * 2 * blocks * b * rows,
        "prompt_kv": cfg.text_tokens * width * 2 * blocks * b * rows,
        "transformer_activations": rows * (chunk * width * 4 * (1 + 6) + 2 * chunk * cfg.ffn_dim * b
                                           + 4 * chunk * width * b + 2 * slots * tokens * width * b),
        "vae_feature_cache": rows * cache,
        "vae_activations": rows * (activations + pixels),
        "text_encoding": cfg.text_tokens * (2 * text.config.d_ff + 4 * text.config.d_model) * b,
    }
    networks = {"transformer": transformer, "vae": vae, "text_encoder": text}
    return WanMemory(parts, {name: sum(p.numel() for p in net.parameters()) for name, net in networks.items()})


def check_fits_gpu(memory: WanMemory, free: int, *, size: str, dtype: torch.dtype, offload: bool,
                   bf16: WanMemory | None = None) -> None:
    """SettingError when the estimated peak (plus CUDA's context) exceeds ``free`` bytes of the GPU: naming the
    estimate and the fixes that would fit (``offload_text_encoder``, ``dtype bf16`` with ``bf16``'s estimate)."""
    need = memory.peak(offload) + CONTEXT_BYTES
    if need <= free:
        return
    fixes = []
    if not offload and memory.offloaded + CONTEXT_BYTES <= free:
        fixes.append(f"{opt('offload_text_encoder')} (about {memory.offloaded / GIB:.1f} GiB)")
    if bf16 is not None and dtype != torch.bfloat16:
        for offloaded in (offload, True):
            if bf16.peak(offloaded) + CONTEXT_BYTES <= free:
                fixes.append(f"{opt('dtype', 'bf16')}" + ("" if offloaded == offload else
                                                           f" with {opt('offload_text_encoder')}")
                             + f" (about {bf16.peak(offloaded) / GIB:.1f} GiB)")
                break
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    advice = "give " + " or ".join(fixes) if fixes else "use a GPU with more memory or a smaller size"
    raise SettingError("device", "cuda", f"this GPU has {free / GIB:.1f} GiB free but the Wan model at {size} in "
                       f"{name}{' with the text encoder offloaded' if offload else ''} needs about "
                       f"{need / GIB:.1f} GiB (estimated from its configs); {advice}")
