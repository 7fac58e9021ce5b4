"""Every weight format of Wan transformers users hold (ca2vdm/checkpoints/formats.py, ca2vdm/models/wan/formats.py),
written by the test from a tiny model: exported with ``ca2vdm export`` into our weights file, which loads to the same
weights and the same outputs as diffusers' model; other files, truncated ones and weights that do not fit are refused
in one line."""
import json
import re

import peft
import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from ca2vdm.checkpoints.weights import load_model, metadata_of
from ca2vdm.encoders.text import TextEmbeddings
from ca2vdm.models.registry import build_model, tiny_config
from ca2vdm.models.wan.formats import wan_name
from ca2vdm.models.wan.model import diffusers_config

from helpers import run_command

HEADS = "model.num_heads=2"  # a bare state dict does not say its heads (Wan's have 128 channels each; the tiny 12)


@pytest.fixture(scope="module")
def reference():
    """diffusers' tiny Wan with perturbed weights, and its one-chunk output on fixed inputs."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**diffusers_config(tiny_config("wan"))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        text = torch.randn(1, 8, 256, generator=torch.Generator().manual_seed(2))
        out = model(x, torch.tensor([700.0]), text, return_dict=False)[0]
    return model, (x, text, out)


def _loads_as_the_reference(path, reference):
    model, (x, text, out) = reference
    loaded, meta = load_model(path)
    state = model.state_dict()
    assert loaded.state_dict().keys() == state.keys() and all(
        torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    assert meta.model.chunk_frames == 3 and not meta.model.first_frame_chunk  # a 3-frame chunk sees itself whole
    with torch.no_grad():
        ours = loaded(x, torch.full((1, 3), 0.7), text=TextEmbeddings(text, torch.ones(1, 8, dtype=torch.bool)))
    assert (ours - out).abs().max() <= 1e-5
    return meta


def _write(kind: str, model, root):
    """``model``'s weights written in format ``kind`` under ``root``; the path to export and extra arguments."""
    state = model.state_dict()
    wan = {wan_name(k): v.clone() for k, v in state.items()}
    if kind == "diffusers":
        model.save_pretrained(root / "pipeline/transformer")
        return root / "pipeline", []
    if kind == "wan-file":
        save_file({"model.diffusion_model." + k: v for k, v in wan.items()}, root / "wan.safetensors")
        return root / "wan.safetensors", [HEADS]
    if kind == "wan-folder":
        (root / "Wan").mkdir()
        half = len(wan) // 2
        names = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002"
                 ".safetensors"]
        for name, part in zip(names, (dict(list(wan.items())[:half]), dict(list(wan.items())[half:]))):
            save_file(part, root / "Wan" / name)
        index = {"weight_map": {k: names[i >= half] for i, k in enumerate(wan)}}
        (root / "Wan/diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
        config = dict(model_type="t2v", dim=24, ffn_dim=32, freq_dim=256, in_dim=3, out_dim=3, num_heads=2,
                      num_layers=2, text_len=8, text_dim=256, eps=1e-6)
        (root / "Wan/config.json").write_text(json.dumps(config))
        return root / "Wan", []
    other = {"model." + k: torch.zeros_like(v) for k, v in wan.items()}  # the non-EMA generator: must not be chosen
    torch.save({"generator": other, "generator_ema": {"model." + k: v for k, v in wan.items()}, "step": 600},
               root / "self_forcing.pt")
    return root / "self_forcing.pt", [HEADS]


@pytest.mark.parametrize("kind", ["diffusers", "wan-file", "wan-folder", "self-forcing"])
def test_each_format_exports_to_weights_that_load_as_diffusers_model(kind, reference, tmp_path):
    src, extra = _write(kind, reference[0], tmp_path)
    dst = tmp_path / "out.safetensors"
    assert run_command("export", src, dst, "--model", "wan-tiny", "--dtype", "fp32", *extra) == 0
    meta = _loads_as_the_reference(dst, reference)
    pt = kind == "self-forcing"
    assert meta.raw["source_format"] == {"diffusers": "diffusers", "self-forcing": "self-forcing"}.get(kind, "wan")
    assert (meta.sampler.steps, meta.sampler.shift, meta.sampler.cond_noise) == ((4, 5.0, 0.0) if pt else
                                                                                 (50, 3.0, 0.0))
    assert meta.model.positions == "absolute" and not meta.pixel_space


def test_longlive_base_and_lora_fold_into_the_weights_peft_runs(reference, tmp_path):
    """LongLive's lora.pt (peft's tensors under generator_lora, Wan names) folded into its base == our model with the
    same adapter injected by peft (alpha / rank = 2)."""
    base, (x, text, _) = reference
    src, extra = _write("self-forcing", base, tmp_path)
    gen = torch.Generator().manual_seed(3)
    targets = {"blocks.0.attn1.to_q": (24, 24), "blocks.1.attn2.to_v": (24, 24), "blocks.0.ffn.net.0.proj": (32, 24)}
    pairs = {name: (torch.randn(2, n_in, generator=gen), torch.randn(n_out, 2, generator=gen))
             for name, (n_out, n_in) in targets.items()}
    lora = {f"base_model.model.{wan_name(name + '.')}lora_{ab}.weight": t
            for name, tensors in pairs.items() for ab, t in zip("AB", tensors)}
    torch.save({"generator_lora": lora, "critic_lora": {}, "step": 10}, tmp_path / "lora.pt")
    dst = tmp_path / "longlive.safetensors"
    assert run_command("export", src, dst, "--model", "wan-tiny", "--dtype", "fp32", "--lora", tmp_path / "lora.pt",
                       "--lora-alpha", "4", *extra) == 0
    loaded, meta = load_model(dst)
    assert meta.raw["preset"] == "longlive" and (meta.model.sink_frames, meta.model.max_context_frames) == (3, 9)
    adapted = build_model(meta.model)
    adapted.load_state_dict(base.state_dict())
    peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_alpha=4, target_modules=list(targets)), adapted)
    adapted.load_state_dict({f"{name}.lora_{ab}.default.weight": t for name, tensors in pairs.items()
                             for ab, t in zip("AB", tensors)}, strict=False)
    prompt = TextEmbeddings(text, torch.ones(1, 8, dtype=torch.bool))
    plain = build_model(meta.model)
    plain.load_state_dict(base.state_dict())
    with torch.no_grad():
        folded, ref, unadapted = (m.eval()(x, torch.full((1, 3), 0.7), text=prompt) for m in (loaded, adapted, plain))
    assert (folded - ref).abs().max() <= 1e-5 and (folded - unadapted).abs().max() > 1e-3


def _truncated(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize("case, message", [
    ("other-safetensors", r"not a Wan transformer checkpoint: expected a diffusers folder .*; found a safetensors file "
                          r"of keys 2 \(final.bias, x_embedder.weight\)"),
    ("folder", r"not a Wan transformer checkpoint: expected .*; found a folder of 1 \(notes.txt\) files"),
    ("lora-as-base", r"is a LoRA adapter \(LongLive's lora.pt\), not a transformer"),
    ("truncated-safetensors", r"is corrupt \(truncated or damaged\)"),
    ("truncated-pt", r"is not a readable .pt file \(truncated, damaged or not saved by torch.save\)"),
    ("missing-shard", r"lists 2 weight shards in .* but 1 \(diffusion_pytorch_model-00002-of-00002.safetensors\) "
                      r"are missing"),
    ("missing-and-unexpected", r"does not fit a wan-tiny model: 1 \(blocks.1.ffn.net.2.bias\) tensors missing, 1 "
                               r"\(blocks.1.extra.weight\) unexpected"),
    ("bad-override", r"override 'steps=4' is not model.KEY=VALUE or sampler.KEY=VALUE"),
])
def test_other_files_truncated_files_and_misfits_are_refused_in_one_line(case, message, reference, tmp_path):
    model = reference[0]
    extra = [HEADS]
    if case == "other-safetensors":
        save_file({"x_embedder.weight": torch.ones(2), "final.bias": torch.ones(1)}, tmp_path / "src.safetensors")
        src = tmp_path / "src.safetensors"
    elif case == "folder":
        (tmp_path / "src").mkdir()
        (tmp_path / "src/notes.txt").write_text("weights elsewhere")
        src = tmp_path / "src"
    elif case == "lora-as-base":
        torch.save({"generator_lora": {"base_model.model.blocks.0.self_attn.q.lora_A.weight": torch.ones(2, 24)}},
                   tmp_path / "lora.pt")
        src = tmp_path / "lora.pt"
    elif case == "truncated-safetensors":
        src = _truncated(_write("wan-file", model, tmp_path)[0])
    elif case == "truncated-pt":
        src = _truncated(_write("self-forcing", model, tmp_path)[0])
    elif case == "missing-shard":
        src = _write("wan-folder", model, tmp_path)[0]
        (src / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    elif case == "missing-and-unexpected":
        state = {"model." + wan_name(k): v for k, v in model.state_dict().items() if k != "blocks.1.ffn.net.2.bias"}
        torch.save({"generator": {**state, "model.blocks.1.extra.weight": torch.ones(1)}}, tmp_path / "cut.pt")
        src = tmp_path / "cut.pt"
    else:
        src, extra = _write("self-forcing", model, tmp_path)[0], ["steps=4"]
    dst = tmp_path / "out.safetensors"
    error = run_command("export", src, dst, "--model", "wan-tiny", *extra)
    assert isinstance(error, str) and re.search(message, error) and "\n" not in error.strip(), error
    assert not dst.exists()


def test_an_export_records_overrides_and_the_named_sizes(reference, tmp_path):
    src, extra = _write("self-forcing", reference[0], tmp_path)
    dst = tmp_path / "ring.safetensors"
    assert run_command("export", src, dst, "--model", "wan-tiny", "model.positions=ring", "sampler.steps=8",
                       *extra) == 0
    meta = metadata_of(dst)
    assert meta.model.positions == "ring" and meta.sampler.steps == 8 and meta.model.text_encoder == "wordllama"
    assert load_model(dst)[0].state_dict()["proj_out.weight"].dtype == torch.float32  # bf16 file, fp32 model
