"""A downloaded Wan folder in miniature, with random weights: what the tests, the README's commands and the GPU
check's dry run use in place of Wan2.1-T2V-1.3B and a Self-Forcing checkpoint, which cannot be downloaded here.

:func:`write_tiny_wan` writes a Wan 2.1 diffusers folder as ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` lays it out, through
diffusers' own ``WanPipeline(...).save_pretrained`` (so ``WanPipeline.from_pretrained`` runs it): a tiny
``WanTransformer3DModel`` (2 blocks, 2 heads of 12, diffusers' test sizes), a tiny ``AutoencoderKLWan`` (8x space, 4x
time, 16 channels), a tiny ``UMT5EncoderModel`` and a T5 tokenizer built offline from a word list, and a
flow-matching scheduler. :func:`write_self_forcing_pt` writes a causal student of it as Self-Forcing saves one
(``generator_ema`` in Wan's names under ``model.``). Nothing is downloaded.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ca2vdm.models.wan.formats import to_wan

WORDS = ("a the red green blue yellow white purple circle square triangle small large moves drifting left right up "
         "down slowly quickly on").split()
UMT5 = dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, feed_forward_proj="gated-gelu")  # a tiny UMT5 encoder
TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
                   text_dim=UMT5["d_model"], freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                   qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
VAE = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
SCHEDULER_SHIFT = 5.0
WEIGHT_NOISE = 0.1  # added to every weight, so that zero-initialised layers carry signal too


def _perturbed(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * WEIGHT_NOISE)
    return module.eval()


def tokenizer():
    """A T5 (Unigram) tokenizer of :data:`WORDS`, as a Wan folder's tokenizer is read back (built offline)."""
    from transformers import AutoTokenizer, T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    with tempfile.TemporaryDirectory() as folder:
        T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def write_tiny_wan(root: str | Path, seed: int = 0) -> Path:
    """A tiny random Wan 2.1 text-to-video diffusers folder at ``root`` (see the module docstring); returns it."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    root = Path(root)
    words = tokenizer()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    text_encoder = _perturbed(UMT5EncoderModel(UMT5Config(vocab_size=len(words), **UMT5)), gen)
    transformer = _perturbed(WanTransformer3DModel(**TRANSFORMER), gen)
    latents_mean = torch.linspace(-0.5, 0.5, VAE["z_dim"]).tolist()
    latents_std = torch.linspace(0.5, 2.0, VAE["z_dim"]).tolist()
    vae = AutoencoderKLWan(**VAE, latents_mean=latents_mean, latents_std=latents_std).eval()
    pipe = WanPipeline(tokenizer=words, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT))
    pipe.save_pretrained(str(root))
    return root


def write_self_forcing_pt(root: str | Path, path: str | Path, seed: int = 1) -> Path:
    """A causal student of the tiny folder at ``root`` (its transformer with other random weights) saved as
    Self-Forcing saves one: ``{"generator_ema": {"model." + Wan name: tensor}, "step": ...}``."""
    from diffusers import WanTransformer3DModel

    transformer = WanTransformer3DModel.from_pretrained(str(Path(root) / "transformer"), local_files_only=True)
    _perturbed(transformer, torch.Generator().manual_seed(seed))
    state = to_wan(transformer.state_dict())
    torch.save({"generator_ema": {"model." + k: v for k, v in state.items()}, "step": 0}, str(path))
    return Path(path)
