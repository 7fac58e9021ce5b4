"""LoRA adapters at inference (ca2vdm/checkpoints/adapters.py, ca2vdm/models/lora.py): the settings, merged ==
unmerged, stacking, scale 0, the wrong base refused, and the paths that apply them: the API, the generate command
line, the server's catalog and ``ca2vdm merge-lora``."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

import ca2vdm
import ca2vdm.cli.generate as cli
from ca2vdm.checkpoints.adapters import read_adapter, save_merged
from ca2vdm.checkpoints.weights import load_model, read_metadata, save_tensors, save_weights
from ca2vdm.config import AutoencoderTrainingConfig, DistillTrainingConfig, load_config, parse_lora
from ca2vdm.data.synthetic import PALETTE
from ca2vdm.errors import CheckpointError, ConfigError, SettingError
from ca2vdm.evaluation.metrics import foreground_colour
from ca2vdm.io.video import read_video
from ca2vdm.models import lora as layers
from ca2vdm.serve import create_app, load_catalog
from ca2vdm.training.loop import train

from helpers import cli_error, random_model, run_command

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny.yaml"


@pytest.fixture(scope="module")
def adapters(checkpoint, shapes, tmp_path_factory):
    """Two adapters of the tiny checkpoint: a trained one (2 LoRA steps) and, with the same metadata, random tensors
    large enough to move every output; and one trained on another base."""
    root = tmp_path_factory.mktemp("adapters")
    train(load_config(TINY, [f"data.root={shapes}", f"train.output_dir={root / 'run'}", f"train.init_from={checkpoint}",
                             "train.batch_size=2", "train.max_steps=2", "train.lora.rank=2",
                             "train.lora.targets=[attention,mlp,adaln]"]), progress_bar=False)
    trained = root / "run/checkpoints/step_000002"
    torch.manual_seed(0)
    strong = root / "strong.safetensors"
    save_tensors(strong, {k: torch.randn_like(v) * 0.2 for k, v in load_file(trained / "adapter.safetensors").items()},
                 read_metadata(trained / "adapter.safetensors"))
    other = root / "other-base.safetensors"
    model = random_model(seed=1, num_classes=3)
    save_weights(other, model.state_dict(), model.cfg)
    foreign = root / "foreign.safetensors"
    save_tensors(foreign, load_file(strong), {**read_metadata(strong), "base_checkpoint": str(other),
                                              "base_weights_sha256": "0" * 64})
    return {"trained": trained, "strong": strong, "foreign": foreign}


def _delta(adapter, module: str, scale: float = 1.0) -> torch.Tensor:
    a = read_adapter(adapter)
    A, B = a.tensors[f"{module}.lora_A.weight"], a.tensors[f"{module}.lora_B.weight"]
    return scale * a.settings["alpha"] / a.settings["rank"] * B @ A


@pytest.mark.parametrize("overrides, message", [
    (["train.lora.rank=0"], "train.lora.rank must be a whole number >= 1, got 0"),
    (["train.lora.alpha=0"], "train.lora.alpha must be a finite number > 0, got 0.0"),
    (["train.lora.targets=[attention,'blocks.[']"], "train.lora.targets: 'blocks.[' is neither a group"),
    (["train.lora.base_dtype=bf16"], "train.lora.base_dtype=bf16 needs train.mixed_precision=bf16"),
    (["train.lora.base_dtype=fp16"], "train.lora.base_dtype must be one of fp32, bf16"),
    (["train.lora.rnk=2"], "key train.lora.rnk"),
])
def test_bad_lora_settings_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(TINY, ["train.init_from=base.safetensors", *overrides])


def test_lora_needs_a_base_and_a_trainer_that_starts_from_one():
    config = load_config(TINY, ["train.init_from=base.safetensors", "train.lora.rank=8"]).train
    assert (config.lora.rank, config.lora.alpha, config.lora.targets) == (8, 4.0, ["attention", "mlp"])
    assert load_config(TINY).train.lora is None  # full training unless asked
    with pytest.raises(ConfigError, match="train.lora needs train.init_from"):
        load_config(TINY, ["train.lora={}"])
    with pytest.raises(ConfigError, match="train.lora applies to the video model's trainer .* our autoencoder"):
        load_config(ROOT / "configs/ae-tiny.yaml", ["train.lora={}"], AutoencoderTrainingConfig)
    with pytest.raises(ConfigError, match="distillation trains every weight .* train.init_from=STUDENT\\): remove"):
        load_config(ROOT / "configs/distill-demo.yaml", ["train.lora={}", "train.init_from=s.safetensors"],
                    DistillTrainingConfig)


def test_lora_spec_parses_a_path_and_an_optional_scale(tmp_path, monkeypatch):
    assert parse_lora("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora("runs/x/step_000100") == ("runs/x/step_000100", 1.0)
    assert parse_lora("odd:name") == ("odd:name", 1.0) and parse_lora("a:-1") == ("a", -1.0)
    for scale in ("inf", "nan", "1e9", "-11"):  # 1e9 was taken; 1e30 too by merge-lora
        with pytest.raises(ValueError, match=r"must be a finite number in \[-10, 10\]"):
            parse_lora(f"a:{scale}")
    with pytest.raises(ValueError, match="ends with ':' but gives no scale"):  # was read as the path 'a.safetensors:'
        parse_lora("a.safetensors:")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b:2").mkdir()  # a folder literally named b:2 is that folder, not b with scale 2
    assert parse_lora("b:2") == ("b:2", 1.0)
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match="could be the file b:2 .* or b with scale 2"):
        parse_lora("b:2")


def test_a_scale_out_of_range_is_refused_before_any_weight_loads(checkpoint, adapters, tmp_path, capsys, monkeypatch):
    """merge-lora --scale nan wrote a checkpoint 60 % NaN; --scale 1e30 and the API's (path, nan) were accepted (the
    API then blamed damaged weights)."""
    out = tmp_path / "merged.safetensors"
    for scale in ("nan", "1e30"):
        assert run_command("merge-lora", checkpoint, adapters["strong"], out, "--scale", scale) == 2
        assert "argument --scale: must be a finite number in [-10, 10]" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setattr("ca2vdm.generation.api.load_model", lambda *a: pytest.fail("loaded before checking"))
    for lora in [(adapters["strong"], float("nan")), [(adapters["strong"], 1e9)], [3]]:
        with pytest.raises(SettingError, match="^lora="):
            ca2vdm.load_pipeline(checkpoint, "cpu", lora=lora)


def test_merged_equals_unmerged_and_touches_only_the_targets(checkpoint, adapters):
    adapter = read_adapter(adapters["strong"])
    live, _ = load_model(checkpoint)
    layers.attach(live, adapter.tensors, adapter.settings, 0.7, "live")
    merged, _ = load_model(checkpoint)
    merged = layers.merge(merged, adapter.tensors, adapter.settings, 0.7)
    base, _ = load_model(checkpoint)
    x, t, y = torch.randn(1, 3, 4, 16, 16), torch.rand(1, 4), torch.tensor([1])
    with torch.no_grad():
        out_live, out_merged, out_base = live(x, t, y), merged(x, t, y), base(x, t, y)
    assert torch.allclose(out_live, out_merged, atol=1e-5) and not torch.allclose(out_merged, out_base, atol=1e-3)
    state, before = merged.state_dict(), base.state_dict()
    assert state.keys() == before.keys()  # the base's structure again
    changed = {k for k in state if not torch.equal(state[k], before[k])}
    assert changed == {f"{m}.weight" for m in (k.rsplit(".lora_", 1)[0] for k in adapter.tensors)}


def test_stacked_adapters_add_their_scaled_deltas_and_scale_0_is_the_base(checkpoint, adapters):
    base = ca2vdm.load_pipeline(checkpoint, "cpu")
    stacked = ca2vdm.load_pipeline(checkpoint, "cpu", lora=[(adapters["strong"], 1.0), (adapters["trained"], 0.5)])
    module = "stack.blocks.1.temporal.qkv"
    expected = base.model.get_parameter(f"{module}.weight") + _delta(adapters["strong"], module) + \
        _delta(adapters["trained"], module, 0.5)
    assert torch.allclose(stacked.model.get_parameter(f"{module}.weight"), expected, atol=1e-6)
    swapped = ca2vdm.load_pipeline(checkpoint, "cpu", lora=[(adapters["trained"], 0.5), (adapters["strong"], 1.0)])
    first = lambda pipe: torch.cat([c.latents for c in pipe.generate(2, label=1, seed=3)], dim=2)  # noqa: E731
    assert torch.allclose(first(stacked), first(swapped), atol=1e-5)
    assert not torch.allclose(first(stacked), first(base), atol=1e-3)
    zero = ca2vdm.load_pipeline(checkpoint, "cpu", lora=(adapters["strong"], 0.0))
    assert torch.equal(first(zero), first(base))  # scale 0: the base exactly
    assert torch.equal(first(ca2vdm.load_pipeline(checkpoint, "cpu", lora=adapters["strong"])),
                       first(ca2vdm.load_pipeline(checkpoint, "cpu", lora=[(adapters["strong"], 1.0)])))


def test_an_adapter_of_another_base_is_refused_in_one_line_naming_both(checkpoint, adapters, capsys, tmp_path):
    with pytest.raises(CheckpointError) as info:
        ca2vdm.load_pipeline(checkpoint, "cpu", lora=[adapters["strong"], adapters["foreign"]])
    message = str(info.value)
    assert "\n" not in message and str(adapters["foreign"]) in message and "other-base.safetensors" in message
    assert f"not on {checkpoint}" in message
    line = cli_error(capsys, "--checkpoint", checkpoint, "--lora", adapters["foreign"], "--out", tmp_path / "v.mp4")
    assert line.startswith("error: adapter ") and "other-base.safetensors" in line and not (tmp_path / "v.mp4").exists()
    with pytest.raises(CheckpointError, match=r"is a LoRA adapter .*: fold it into its base with ca2vdm merge-lora "
                                              r".* load_pipeline: lora=\)$"):
        ca2vdm.load_pipeline(adapters["strong"], "cpu")
    from ca2vdm.training.distill_task import DistillTask  # distill has no --lora: the message said to pass one
    config = load_config(ROOT / "configs/distill-demo.yaml", [f"distill.teacher={adapters['strong']}",
                                                                f"data.root={tmp_path}"], DistillTrainingConfig)
    with pytest.raises(CheckpointError, match="is a LoRA adapter .*: fold it into its base with ca2vdm merge-lora"):
        DistillTask(config, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="not a LoRA adapter"):
        ca2vdm.load_pipeline(checkpoint, "cpu", lora=checkpoint)


def test_generate_command_line_applies_and_stacks_adapters(checkpoint, adapters, tmp_path, capsys, cli_writes):
    def frames(*flags):
        cli_writes.clear()
        out = tmp_path / f"v{len(list(tmp_path.glob('*.mp4')))}.mp4"
        cli.main(["--checkpoint", str(checkpoint), "--chunks", "2", "--out", str(out), *map(str, flags)])
        assert read_video(out).shape[1] == 5  # the file holds the first frame and 2 chunks
        return torch.from_numpy(np.concatenate(cli_writes))

    base = frames()
    assert torch.equal(frames("--lora", f"{adapters['strong']}:0"), base)
    assert (tmp_path / "v0.mp4").read_bytes() == (tmp_path / "v1.mp4").read_bytes()  # scale 0: the base's file
    adapted = frames("--lora", f"{adapters['strong']}:0.5", "--lora", adapters["trained"], "--stats",
                     tmp_path / "stats.json")
    assert not torch.equal(adapted, base)
    assert '"lora"' in (tmp_path / "stats.json").read_text()
    line = cli_error(capsys, "--checkpoint", checkpoint, "--lora", adapters["strong"], "--out", adapters["strong"],
                     "--overwrite")
    assert "--lora adapter" in line and read_adapter(adapters["strong"])  # the adapter is untouched


def test_the_server_offers_each_adapter_on_its_base(checkpoint, adapters):
    catalog = load_catalog([checkpoint], "cpu", [(adapters["trained"], 1.0), (adapters["strong"], 0.5)])
    assert list(catalog) == ["tiny", "tiny+run/step_000002", "tiny+strong*0.5"]
    base, adapted = catalog["tiny"].pipe.model.state_dict(), catalog["tiny+strong*0.5"].pipe.model.state_dict()
    module = "stack.blocks.0.mlp.0.weight"
    assert torch.allclose(adapted[module], base[module] + _delta(adapters["strong"], module[:-7], 0.5), atol=1e-6)
    with TestClient(create_app(catalog, max_chunks=2)) as client, client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
    assert [m["name"] for m in hello["models"]] == list(catalog)
    with pytest.raises(CheckpointError, match="other-base.safetensors"):
        load_catalog([checkpoint], "cpu", [(adapters["foreign"], 1.0)])


def test_merge_script_writes_base_plus_adapter_and_never_its_inputs(checkpoint, adapters, tmp_path):
    merge = lambda out, *extra: run_command("merge-lora", checkpoint, adapters["strong"], out, *extra)  # noqa: E731
    out = tmp_path / "merged.safetensors"
    assert merge(out, "--scale", "0.5") == 0
    first = lambda pipe: torch.cat([c.latents for c in pipe.generate(2, label=0, seed=1)], dim=2)  # noqa: E731
    folded = ca2vdm.load_pipeline(checkpoint, "cpu", lora=[(adapters["strong"], 0.5)])
    assert torch.allclose(first(ca2vdm.load_pipeline(out, "cpu")), first(folded), atol=1e-5)
    assert read_metadata(out)["merged_lora"] == [{"adapter": str(adapters["strong"]), "scale": 0.5}]
    os.mkfifo(tmp_path / "pipe.safetensors")
    for target in (checkpoint, adapters["strong"], adapters["trained"] / "adapter.safetensors",
                   tmp_path / "pipe.safetensors", tmp_path):
        before = target.read_bytes() if target.is_file() else None
        refused = str(merge(target, "--overwrite"))
        assert refused.startswith("error: ") and "\n" not in refused, refused
        assert (target.read_bytes() if target.is_file() else None) == before
    assert not (tmp_path / "pipe.safetensors").is_file()  # still the pipe
    assert merge(tmp_path / "merged.pt") == (f"error: {tmp_path / 'merged.pt'} does not end in .safetensors: an "
                                             "export is a safetensors weights file; name it so, e.g. "
                                             "checkpoints/<name>.safetensors")
    fp16 = save_merged(checkpoint, adapters["strong"], tmp_path / "half.safetensors", torch.float16)
    assert all(v.dtype == torch.float16 for v in load_file(fp16).values())


def test_the_shipped_adapter_paints_the_shipped_models_shapes_white_and_fits_no_other():
    """docs/training.md's worked example: the base draws a palette colour, the adapter white (nearest of the nine)."""
    base, adapter = ROOT / "checkpoints/demo.safetensors", ROOT / "checkpoints/demo-white.safetensors"
    bank = np.concatenate([PALETTE / 255, np.ones((1, 3), np.float32)])  # the palette's eight colours, then white

    def nearest(lora) -> int:
        pipe = ca2vdm.load_pipeline(base, "cpu", lora=lora)
        frames = torch.cat([c.latents[0] for c in pipe.generate(2, label=1, seed=0)], dim=1)
        return int(np.argmin(np.linalg.norm(bank - foreground_colour(frames), axis=1)))

    assert nearest(None) < 8 and nearest(adapter) == 8
    with pytest.raises(CheckpointError, match=r"was trained on checkpoints/demo\.safetensors .* not on \S*latent-demo"):
        ca2vdm.load_pipeline(ROOT / "checkpoints/latent-demo.safetensors", "cpu", lora=adapter)
