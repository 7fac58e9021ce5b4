"""ca2vdm/config/sampler.py and ca2vdm/checkpoints/metadata.py: one typed, checked set of sampler settings that the
command line's flags are generated from, the API takes as keywords, and checkpoints record with a version."""
import dataclasses
import json
import math

import pytest

import ca2vdm
from ca2vdm.checkpoints.metadata import VERSION, CheckpointMetadata
from ca2vdm.checkpoints.weights import load_model, read_metadata, save_weights
from ca2vdm.cli.generate import parse_args
from ca2vdm.config import STEP_CACHE_NAMES, DiffusionConfig, DistillConfig, SamplerSettings, load_config
from ca2vdm.config.options import declared_fields
from ca2vdm.errors import CheckpointError, ConfigError, SettingError

from helpers import random_model


def test_every_setting_is_a_flag_of_the_command_line():
    fields = [f.name for f in dataclasses.fields(SamplerSettings)]
    args = parse_args(["--steps", "8", "--shift", "2.5", "--cfg-scale", "3", "--cond-noise", "0.1", "--cache", "none",
                       "--step-cache", "taylorseer", "--step-cache-opt", "interval=2,cfg_reuse=1", "--sink-frames",
                       "1", "--sink-rope", "original"])
    assert sorted(args.sampler) == sorted(fields)  # one flag per setting, nothing else
    assert SamplerSettings(**args.sampler) == SamplerSettings(8, 2.5, 3.0, 0.1, "none", "taylorseer",
                                                              {"interval": 2, "cfg_reuse": True}, 1, "original")
    assert parse_args([]).sampler == {}  # nothing given: the checkpoint's


@pytest.mark.parametrize("change, says", [
    ({"steps": 0}, "steps=0: must be a whole number in [1, 10000]"),
    ({"steps": True}, "steps=True: must be a whole number"),
    ({"shift": math.nan}, "shift=nan: must be a finite number in (0, 1000]"),
    ({"cfg_scale": math.inf}, "cfg_scale=inf: must be a finite number"),
    ({"cond_noise": 1.0}, "cond_noise=1.0: must be a finite number in [0, 1)"),
    ({"cache": "disk"}, "cache=disk: must be one of kv, none, full"),
    ({"step_cache": "warp"}, "step_cache=warp: must be one of " + ", ".join(STEP_CACHE_NAMES)),
    ({"step_cache": "chunkcache", "step_cache_options": {"threshold": math.nan}},
     "step_cache_options=threshold=nan: chunkcache's threshold must be a finite number >= 0"),
    ({"step_cache": "adacache", "step_cache_options": {"growth_weight": math.inf}}, "growth_weight=inf"),
    ({"step_cache": "adacache", "step_cache_options": {"motion_weight": -5}}, "motion_weight=-5"),
    ({"step_cache_options": {"threshold": 0.2}}, "needs a step cache (step_cache is none)"),
    ({"sink_frames": -1}, "sink_frames=-1: must be a whole number >= 0"),
    ({"sink_rope": "absolute"}, "sink_rope=absolute: must be one of adjacent, original"),
])
def test_every_value_is_checked_in_one_place(change, says):
    with pytest.raises(SettingError) as error:
        SamplerSettings().replace(**change)
    assert says in str(error.value) and "--" not in str(error.value)  # the API's names, not flags


def test_replace_keeps_what_is_not_given_and_a_new_step_cache_drops_the_old_options():
    settings = SamplerSettings(steps=8, step_cache="teacache", step_cache_options={"threshold": 0.3})
    assert settings.replace(shift=None, steps=4).steps == 4 and settings.replace(shift=None).shift == 1.0
    assert settings.replace(step_cache="taylorseer").step_cache_options == {}
    with pytest.raises(TypeError, match="unknown sampler setting"):
        settings.replace(step=3)


def test_checkpoints_record_a_version_and_older_ones_still_load(tmp_path):
    model = random_model(num_classes=3)
    old = tmp_path / "v1.safetensors"  # written before versions: the sampler settings sit in the training config
    save_weights(old, model.state_dict(), model.cfg, {"diffusion_config": {"steps": 5, "shift": 2.0, "cfg_scale": 3.0,
                                                                           "label_dropout": 0.1}})
    _, meta = load_model(old)
    assert meta.version == 1 and meta.sampler == SamplerSettings(steps=5, shift=2.0, cfg_scale=3.0)
    new = tmp_path / "v2.safetensors"
    save_weights(new, model.state_dict(), model.cfg, meta.entries())
    recorded = read_metadata(new)
    assert recorded["metadata_version"] == VERSION and recorded["sampler"]["version"] == 1
    assert load_model(new)[1].sampler == meta.sampler and load_model(new)[1].version == VERSION
    future = {"metadata_version": VERSION + 1}
    with pytest.raises(CheckpointError, match=f"metadata version {VERSION + 1}.*upgrade ca2vdm"):
        CheckpointMetadata.from_raw(future, model.cfg)
    assert json.loads(json.dumps(meta.entries()))  # what a file records is plain JSON


def test_the_shipped_checkpoints_read_as_version_one():
    for name, shift in (("demo", 1.0), ("latent-demo", 3.0)):
        _, meta = load_model(f"checkpoints/{name}.safetensors")
        assert meta.version == 1 and (meta.sampler.steps, meta.sampler.shift, meta.sampler.cfg_scale) == (16, shift,
                                                                                                            1.5)
    assert load_model("checkpoints/demo.safetensors")[1].class_names == ["circle", "square", "triangle"]


def test_the_api_takes_the_settings_as_keywords(checkpoint):
    pipe = ca2vdm.load_pipeline(checkpoint, "cpu", steps=2, cache="none", step_cache="taylorseer",
                                step_cache_options={"interval": 2})
    assert pipe.settings == SamplerSettings(steps=2, cache="none", step_cache="taylorseer",
                                            step_cache_options={"interval": 2})
    assert pipe.sampler.policy.config.interval == 2
    with pytest.raises(TypeError, match="unknown sampler setting"):
        ca2vdm.load_pipeline(checkpoint, "cpu", stepz=2)
    with pytest.raises(TypeError, match="unknown sampler setting.*teacache_thresh"):  # a command line's spelling only
        ca2vdm.load_pipeline(checkpoint, "cpu", step_cache="teacache", teacache_thresh=0.3)


def test_a_training_config_declares_the_sampler_fields_once():
    """diffusion.steps/shift/cond_noise/cfg_scale are SamplerSettings' fields (type, default, range, help), the
    student's distill.steps and the teacher's distill.guidance take their ranges; a run's checkpoint records
    config.diffusion.sampler()."""
    sampler = declared_fields(SamplerSettings)
    diffusion = declared_fields(DiffusionConfig)
    shared = [name for name in diffusion if name in sampler]
    assert shared == ["steps", "shift", "cond_noise", "cfg_scale"]
    assert all(diffusion[name] == sampler[name] for name in shared)
    assert {name: getattr(DiffusionConfig(), name) for name in shared} == {
        name: getattr(SamplerSettings(), name) for name in shared}
    distill = declared_fields(DistillConfig)
    assert (distill["steps"].low, distill["steps"].high) == (sampler["steps"].low, sampler["steps"].high)
    assert (distill["guidance"].low, distill["guidance"].high, distill["guidance"].optional) == (
        sampler["cfg_scale"].low, sampler["cfg_scale"].high, True)
    assert DistillConfig().steps == 4 and DistillConfig().guidance is None
    config = load_config("configs/demo.yaml", ["diffusion.steps=5", "diffusion.shift=2"]).diffusion
    assert config.sampler() == SamplerSettings(steps=5, shift=2.0, cfg_scale=1.5, cond_noise=0.05)
    with pytest.raises(ConfigError, match=r"diffusion.shift must be a finite number in \(0, 1000\], got 2000"):
        load_config("configs/demo.yaml", ["diffusion.shift=2000"])  # the sampler's range: refused before training
