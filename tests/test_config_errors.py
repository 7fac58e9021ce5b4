"""Bad configs are one clear error (see docs/reliability.md): unknown keys, wrong types, values past a declared
field's range (every declared field of every trainer's config), rules between fields, broken files."""
import dataclasses
import math
from pathlib import Path

import pytest

import ca2vdm.config
from ca2vdm.config import AutoencoderTrainingConfig, Config, DistillTrainingConfig, load_config, validate
from ca2vdm.config.options import declared_fields
from ca2vdm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny.yaml"

@pytest.mark.parametrize("overrides, message", [
    (["foo.bar=1"], r"key foo: Key 'foo' not in 'Config'"),                                 # unknown section
    (["train.lr=fast"], r"key train.lr: Value 'fast' .* could not be converted to Float"),  # wrong type
    (["model.first_frame_chunk=maybe"], r"key model.first_frame_chunk: .*not a valid bool"),
    (["data.root=''"], r"data.root is required"),                                           # required, empty
    (["train.output_dir=' '"], r"train.output_dir is required"),
    (["train.max_steps"], r"override 'train.max_steps' is not key=value"),
    (["model.resolution=18"], r"model.resolution=18 is not divisible by model.patch_size=4"),
    (["model.max_context_frames=1"], r"model.max_context_frames=1 is shorter than a chunk \(model.chunk_frames=2\)"),
    (["model.patch_size=0"], r"model.patch_size must be >= 1, got 0"),                      # not ZeroDivisionError
    (["train.save_every=0"], r"train.save_every must be a whole number >= 1, got 0"),     # not mid-training
    (["model.in_channels=1"], r"model.in_channels must be 3"),
])
def test_bad_config_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, overrides)


# every declared field of every trainer's config: (schema, its YAML, section, field, the field's declaration)
TRAINERS = [(Config, TINY), (AutoencoderTrainingConfig, ROOT / "configs/ae-tiny.yaml"),
            (DistillTrainingConfig, ROOT / "configs/distill-demo.yaml")]
LORA = ["train.init_from=base.safetensors", "train.lora={}"]  # train.lora's fields are declared too
FIELDS = [(schema, path, section, name, declared) for schema, path in TRAINERS
          for section, cls in [(f.name, f.type) for f in dataclasses.fields(schema)] + [("train.lora", "LoraConfig")]
          for name, declared in declared_fields(getattr(ca2vdm.config, cls)).items()
          if section != "train.lora" or schema is Config]


@pytest.mark.parametrize("schema, path, section, name, declared", FIELDS,
                         ids=[f"{s.__name__}-{sec}.{n}" for s, _, sec, n, _ in FIELDS])
def test_every_declared_field_refuses_what_it_does_not_accept(schema, path, section, name, declared):
    """A value of the wrong kind, NaN and infinities for every number, a value past each bound, a word outside the
    choices: one line naming the key and what it accepts, the same words as the sampler's settings."""
    key = f"{section}.{name}"
    typed = {int: ["1.5", "nan"], bool: ["maybe"]}.get(declared.kind, [])  # OmegaConf's own type check refuses these
    bad = {float: ["nan", "inf", "-inf"], list: ["[]"]}.get(declared.kind, [])
    past = [declared.low - 1] if declared.low is not None else []
    past += [declared.high + 1] if declared.high is not None else []
    past += ["nowhere"] if declared.choices else []
    bad += [f"[{each}]" if declared.kind is list else str(each) for each in past]  # a list: each item's range
    extra = LORA if section == "train.lora" else []
    for value in typed + bad + (["' '"] if declared.required and declared.kind is str else []):
        with pytest.raises(ConfigError) as error:
            load_config(path, [*extra, f"{key}={value}"], schema)
        expected = (f"key {key}: Value '{value}'" if value in typed else f"{key} is required" if value == "' '"
                    else f"{key} must be {declared.describe()}, got ")
        assert expected in str(error.value), (value, str(error.value))


def test_a_config_built_in_code_gets_the_same_checks_and_its_values_the_declared_types():
    config = Config()
    config.train.lr, config.train.fsdp, config.diffusion.steps = 1, 1, 4.0
    assert validate(config) is config
    assert (type(config.train.lr), config.train.fsdp, type(config.diffusion.steps)) == (float, True, int)
    config.diffusion.shift = math.nan
    with pytest.raises(ConfigError, match=r"diffusion.shift must be a finite number in \(0, 1000\], got nan"):
        validate(config)


def test_rules_that_relate_fields_run_once_every_field_is_valid():
    with pytest.raises(ConfigError, match="0 < min_t < max_t < 1, got 0.5 and 0.4"):
        load_config(ROOT / "configs/distill-demo.yaml", ["distill.min_t=0.5", "distill.max_t=0.4"],
                    DistillTrainingConfig)
    with pytest.raises(ConfigError) as error:  # a bad value first: the rule would compare it
        load_config(ROOT / "configs/distill-demo.yaml", ["distill.min_t=nan", "distill.max_t=0.4"],
                    DistillTrainingConfig)
    assert str(error.value) == "invalid config: distill.min_t must be a finite number in (0, 1), got nan"
    with pytest.raises(ConfigError, match="codec.path is required with codec.kind=autoencoder"):
        load_config(TINY, ["codec.kind=autoencoder", "model.in_channels=4"])


def test_bad_config_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("train:\n  lr: 1\n bad: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML: .*line 3"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list.yaml must be a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("trian:\n  lr: 1.0\n")
    with pytest.raises(ConfigError, match=r"key trian: Key 'trian' not in 'Config'"):
        load_config(tmp_path / "typo.yaml")
