"""The weight formats of Wan 2.1 transformers that users hold, mapped onto the causal Wan's (diffusers') names, and
the sizes each records: the family's converters (:attr:`~ca2vdm.models.registry.ModelSpec.converters`). Reading the
files (folders, shards, ``.pt`` pickles) is :mod:`ca2vdm.checkpoints.formats`'.

* ``diffusers``: a ``save_pretrained`` folder of ``WanTransformer3DModel`` (the ``-Diffusers`` repositories'
  ``transformer/``): its names are ours.
* ``wan``: the original Wan names (``self_attn.q``, ``head.head``, ``norm3`` before cross-attention, ...) of
  Wan-AI's ``diffusion_pytorch_model*.safetensors``, optionally under ``model.diffusion_model.``: renamed by diffusers'
  own ``convert_wan_transformer_to_diffusers`` (given a copy: it empties its argument).
* ``self-forcing``: Self-Forcing, CausVid, Causal Forcing and LongLive ``.pt`` generators: Wan names under ``model.``
  (the training wrapper's attribute), maybe behind FSDP's ``_fsdp_wrapped_module.``.

Sizes: a diffusers ``config.json`` and Wan's own ``config.json`` name them; a bare state dict gives every size but the
number of heads, which is its width over Wan's head size of 128.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

WAN_HEAD_DIM = 128  # every released Wan 2.1 / 2.2 transformer: 12 heads of 128 (1.3B), 40 of 128 (14B)
# our (diffusers') names -> Wan's, as sequential replacements: the inverse of diffusers' conversion (to_wan)
TO_WAN = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
          ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
          ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
          ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
          ("condition_embedder.time_proj", "time_projection.1"), ("attn1", "self_attn"), ("attn2", "cross_attn"),
          (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
          ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), (".norm2.", ".norm3.")]


def from_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``WanTransformer3DModel`` state dict: already our names."""
    return dict(state)


def from_wan(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan names -> ours, by diffusers' conversion (on a copy)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(state))


def strip_training_prefixes(name: str) -> str:
    """A name as saved by Self-Forcing's training (``model.``, FSDP's ``_fsdp_wrapped_module.``) -> Wan's."""
    return name.replace("_fsdp_wrapped_module.", "").removeprefix("model.")


def from_self_forcing(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Self-Forcing / CausVid / Causal Forcing / LongLive generator's state dict -> ours."""
    return from_wan({strip_training_prefixes(k): v for k, v in state.items()})


def wan_name(key: str) -> str:
    """One of our parameter names in Wan's naming (what Wan's and Self-Forcing's files hold)."""
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return "head.head." + key.removeprefix("proj_out.")
    key = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", key)
    for ours, theirs in TO_WAN:
        key = key.replace(ours, theirs)
    return key


def to_wan(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in Wan's names (a Wan or Self-Forcing file's): :func:`from_wan` reads it back exactly."""
    return {wan_name(k): v for k, v in state.items()}


CONVERTERS = {"diffusers": from_diffusers, "wan": from_wan, "self-forcing": from_self_forcing}


def fields_from_diffusers(config: Mapping) -> dict:
    """ModelConfig fields of a diffusers ``WanTransformer3DModel`` config.json; ValueError for one we cannot run."""
    patch = list(config.get("patch_size", (1, 2, 2)))
    unsupported = {k: config.get(k) for k in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len") if config.get(k)}
    if patch[0] != 1 or patch[1] != patch[2] or unsupported or config.get("in_channels") != config.get(
            "out_channels", config.get("in_channels")):
        raise ValueError(f"a text-to-video Wan transformer (patch 1 x p x p, as many channels out as in, no image "
                         f"embedder) was expected; this one has patch {patch}, {unsupported or 'no image inputs'}")
    return dict(in_channels=config["in_channels"], patch_size=patch[1], num_heads=config["num_attention_heads"],
                hidden_size=config["num_attention_heads"] * config["attention_head_dim"],
                depth=config["num_layers"], ffn_dim=config["ffn_dim"], freq_dim=config.get("freq_dim", 256),
                text_dim=config["text_dim"], eps=config.get("eps", 1e-6),
                rope_max_seq_len=config.get("rope_max_seq_len", 1024))


def fields_from_wan(config: Mapping) -> dict:
    """ModelConfig fields of Wan's own config.json (``dim``, ``num_heads``, ``text_len``, ...)."""
    in_dim = config.get("in_dim")
    if config.get("model_type", "t2v") != "t2v" or in_dim != config.get("out_dim", in_dim):
        raise ValueError(f"a text-to-video Wan transformer was expected; its config.json says model_type="
                         f"{config.get('model_type')!r}, in_dim={in_dim}, out_dim={config.get('out_dim')}")
    return dict(in_channels=config["in_dim"], patch_size=list(config.get("patch_size", (1, 2, 2)))[1],
                hidden_size=config["dim"], num_heads=config["num_heads"], depth=config["num_layers"],
                ffn_dim=config["ffn_dim"], freq_dim=config.get("freq_dim", 256), text_dim=config.get("text_dim", 4096),
                text_tokens=config.get("text_len", 512), eps=config.get("eps", 1e-6))


def fields_from_state(state: Mapping[str, torch.Tensor], num_heads: int | None = None) -> dict:
    """ModelConfig fields read off a state dict in our names (heads: ``num_heads``, else width / 128)."""
    patch = state["patch_embedding.weight"]  # (D, C, 1, p, p)
    width = patch.shape[0]
    if num_heads is None:
        if width % WAN_HEAD_DIM:
            raise ValueError(f"a {width}-wide transformer is not one of Wan's (heads of {WAN_HEAD_DIM}); give its "
                             "number of heads (model.num_heads)")
        num_heads = width // WAN_HEAD_DIM
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    return dict(in_channels=patch.shape[1], patch_size=patch.shape[-1], hidden_size=width, num_heads=num_heads,
                depth=depth, ffn_dim=state["blocks.0.ffn.net.0.proj.weight"].shape[0],
                freq_dim=state["condition_embedder.time_embedder.linear_1.weight"].shape[1],
                text_dim=state["condition_embedder.text_embedder.linear_1.weight"].shape[1])
