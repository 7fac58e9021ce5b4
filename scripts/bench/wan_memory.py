"""Estimated peak GPU memory of Wan2.1-T2V-1.3B generation per frame size and precision, before any GPU run.

    python scripts/bench/wan_memory.py                                  # 480x832 and 720x1280, bf16 and fp32
    python scripts/bench/wan_memory.py --sizes 480x832 --dtypes bf16 --window 12 --sinks 3 --out wan_memory.json

From the configs alone (no weights, no GPU): the parameters of the 1.3B transformer, UMT5-XXL and Wan's VAE are
counted on PyTorch's meta device (the modules diffusers and transformers keep in float32 counted at 4 bytes), and the
VAE's decoder runs one chunk on meta tensors to size its carried feature cache and its largest activation. Then:

* KV cache: (window + sinks) latent frames x tokens per frame x width x 2 (K, V) x blocks x bytes x rows;
* prompt K/V: 512 text tokens x width x 2 x blocks x bytes x rows (computed once per prompt);
* the transformer's activations for one chunk (tokens S = chunk_frames x tokens per frame): the float32 residual
  stream and per-token modulation (S x 6 x width), the FFN's hidden layer twice (S x ffn_dim), q/k/v/out and one
  block's keys and values over the window;
* the VAE's decoding of one chunk: its feature cache + ACTIVATION_COPIES x its largest activation (one latent frame
  per decoder call) + the chunk's float32 pixels;
* UMT5-XXL: resident (its weights beside everything), or offloaded after encoding (``--offload-text-encoder``: it
  is on the GPU only while a prompt is encoded, beside the transformer and the VAE).

Peak = the larger of encoding and generation; denoising and decoding take turns, so their activations do not add.
These are estimates (the allocator's fragmentation and CUDA's context, ~0.5 GiB, are not counted); a GPU run's
``--stats`` (peak_gpu_mb) is the measurement. Writes JSON through ca2vdm.io.results.
"""
import argparse

import torch

from ca2vdm.cli.args import count, new_parser
from ca2vdm.encoders.umt5 import UMT5_XXL, WAN_TOKENS
from ca2vdm.io.results import check_results_path, write_results

WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)  # Wan2.1-T2V-1.3B's transformer
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
ACTIVATION_COPIES = 4  # tensors of the largest activation's size alive at once in a decoder call (x, norm, conv, skip)
GIB, MIB = 2 ** 30, 2 ** 20


def weight_bytes(model: torch.nn.Module, dtype: str) -> int:
    """Bytes of a model's weights loaded with ``from_pretrained`` in ``dtype``: the modules the library keeps in
    float32 then (diffusers: ``_keep_in_fp32_modules`` in bf16 and fp16; transformers: those in fp16 only, and
    ``_keep_in_fp32_modules_strict`` in both) count 4 bytes a parameter."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or []) if dtype != "fp32" else set()
    if hasattr(model, "_keep_in_fp32_modules_strict"):  # a transformers model
        keep = (keep if dtype == "fp16" else set()) | set(model._keep_in_fp32_modules_strict or [])
    total = 0
    for name, p in model.named_parameters():
        kept = any(part in keep for part in name.split("."))
        total += p.numel() * (4 if kept else BYTES[dtype])
    return total


def vae_decode_bytes(vae: torch.nn.Module, latent_hw: tuple[int, int], chunk_frames: int, dtype: str) -> dict:
    """The decoder's feature cache after one chunk and its largest activation, run on meta tensors."""
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
    cache = sum(f.numel() for f in feat if isinstance(f, torch.Tensor)) * BYTES[dtype]
    return {"feature_cache": cache, "activations": ACTIVATION_COPIES * largest[0] * BYTES[dtype]}


def estimate(size: tuple[int, int], dtype: str, args: argparse.Namespace, models: dict) -> dict:
    """Every part's bytes at one frame size and precision, and the peaks with and without offloading UMT5."""
    b, cfg = BYTES[dtype], WAN_1_3B
    height, width = size
    width_d = cfg["num_attention_heads"] * cfg["attention_head_dim"]  # 1536
    latent = (height // 8, width // 8)
    tokens = (latent[0] // cfg["patch_size"][1]) * (latent[1] // cfg["patch_size"][2])  # per latent frame
    rows, blocks, chunk = args.batch * (2 if args.cfg else 1), cfg["num_layers"], args.chunk_frames * tokens
    slots = args.window + args.sinks
    vae = vae_decode_bytes(models["vae"], latent, args.chunk_frames, dtype)
    parts = {
        "transformer_weights": weight_bytes(models["transformer"], dtype),
        "vae_weights": weight_bytes(models["vae"], dtype),
        "text_encoder_weights": weight_bytes(models["text_encoder"], dtype),
        "kv_cache": slots * tokens * width_d * 2 * blocks * b * rows,
        "prompt_kv": WAN_TOKENS * width_d * 2 * blocks * b * rows,
        "transformer_activations": rows * (chunk * width_d * 4 * (1 + 6) + 2 * chunk * cfg["ffn_dim"] * b
                                           + 4 * chunk * width_d * b + 2 * slots * tokens * width_d * b),
        "vae_feature_cache": rows * vae["feature_cache"],
        "vae_activations": rows * (vae["activations"] + 3 * args.chunk_frames * 4 * height * width * 4),
        "text_encoding": WAN_TOKENS * (2 * UMT5_XXL["d_ff"] + 4 * UMT5_XXL["d_model"]) * b,
    }
    resident = parts["transformer_weights"] + parts["vae_weights"] + parts["kv_cache"] + parts["prompt_kv"]
    working = max(parts["transformer_activations"], parts["vae_feature_cache"] + parts["vae_activations"])
    encoding = (parts["transformer_weights"] + parts["vae_weights"] + parts["text_encoder_weights"]
                + parts["text_encoding"])
    peak_offload = max(resident + working, encoding)
    peak_resident = resident + working + parts["text_encoder_weights"]
    return {"size": f"{height}x{width}", "dtype": dtype, "tokens_per_frame": tokens, "cache_frames": slots,
            "mib": {k: round(v / MIB, 1) for k, v in parts.items()},
            "peak_gib": {"text_encoder_resident": round(peak_resident / GIB, 2),
                         "text_encoder_offloaded": round(peak_offload / GIB, 2)},
            "fits_24gib": {"text_encoder_resident": peak_resident < 24 * GIB,
                           "text_encoder_offloaded": peak_offload < 24 * GIB}}


def meta_models() -> dict:
    """The 1.3B transformer, UMT5-XXL and Wan 2.1's VAE built on the meta device (shapes only)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        return {"transformer": WanTransformer3DModel(**WAN_1_3B), "vae": AutoencoderKLWan().eval(),
                "text_encoder": UMT5EncoderModel(UMT5Config(**UMT5_XXL))}


def size_arg(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()) or int(height) % 16 or int(width) % 16:
        raise argparse.ArgumentTypeError(f"{text!r}: give HxW in pixels, multiples of 16 (e.g. 480x832)")
    return int(height), int(width)


def main() -> None:
    p = new_parser(__doc__)
    p.add_argument("--sizes", type=size_arg, nargs="+", default=[(480, 832), (720, 1280)],
                   help="frame sizes HxW in pixels (multiples of 16)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(BYTES), default=["bf16", "fp32"],
                   help="precisions of the weights, caches and activations")
    p.add_argument("--chunk-frames", type=count(1, 1000), default=3, help="latent frames per chunk (Self-Forcing: 3)")
    p.add_argument("--window", type=count(1, 10000), default=12,
                   help="latent frames of K/V kept besides the sinks (LongLive: 12)")
    p.add_argument("--sinks", type=count(0, 10000), default=3,
                   help="attention-sink frames kept besides the window (LongLive: 3)")
    p.add_argument("--batch", type=count(1, 1000), default=1, help="videos generated together")
    p.add_argument("--cfg", action="store_true", help="classifier-free guidance: two rows per video (distilled "
                   "Self-Forcing / LongLive students need none)")
    p.add_output("--out", default="outputs/bench/wan_memory.json", help="JSON file for the estimates")
    args = p.parse_args()
    out = check_results_path(args.out)
    models = meta_models()
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    print("parameters: " + ", ".join(f"{name} {n:,}" for name, n in params.items()))
    rows = [estimate(size, dtype, args, models) for size in args.sizes for dtype in args.dtypes]
    for row in rows:
        mib, peak = row["mib"], row["peak_gib"]
        print(f"{row['size']} {row['dtype']}: peak {peak['text_encoder_offloaded']:.2f} GiB with the text encoder "
              f"offloaded, {peak['text_encoder_resident']:.2f} GiB resident (transformer "
              f"{mib['transformer_weights'] / 1024:.2f} GiB, UMT5 {mib['text_encoder_weights'] / 1024:.2f} GiB, KV "
              f"cache of {row['cache_frames']} frames {mib['kv_cache'] / 1024:.2f} GiB, chunk activations "
              f"{mib['transformer_activations'] / 1024:.2f} GiB, VAE decode of a chunk "
              f"{(mib['vae_feature_cache'] + mib['vae_activations']) / 1024:.2f} GiB)")
    write_results(out, {"model": "Wan2.1-T2V-1.3B + UMT5-XXL + Wan 2.1 VAE", "estimate": True,
                        "settings": {"chunk_frames": args.chunk_frames, "window": args.window, "sinks": args.sinks,
                                     "batch": args.batch, "cfg": args.cfg}, "parameters": params, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
