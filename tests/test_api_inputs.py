"""Bad input to the Python API is one SettingError naming the keyword and what it accepts, raised before any work:
counts, seeds, labels (the 3-class demo's null label 3, True and 1.0 too), devices, precisions, sampler settings and
first frames (none at all, NaN, or pixels in 0 .. 255 passed as floats). The weights are blamed only once the
settings and the input are known to be finite."""
import math

import numpy as np
import pytest
import torch

from ca2vdm.errors import SettingError
from ca2vdm.generation.api import load_pipeline

DEMO = "checkpoints/demo.safetensors"  # 3 classes (labels 0, 1, 2; 3 is the null label of guidance)
SEED_RANGE = "must be a whole number in 0 .. 2**64 - 1"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(DEMO, "cpu", steps=1)


@pytest.mark.parametrize("call, says", [
    (dict(num_chunks=1.5), "num_chunks=1.5: must be a whole number >= 1"),
    (dict(num_chunks="2"), "num_chunks=2: must be a whole number >= 1"),
    (dict(num_chunks=1, seed=1.5), f"seed=1.5: {SEED_RANGE}"),
    (dict(num_chunks=1, seed=2 ** 64), f"seed=18446744073709551616: {SEED_RANGE}"),
    (dict(num_chunks=1, seed=-1), f"seed=-1: {SEED_RANGE}"),
    (dict(num_chunks=1, label=3), "label=3: out of range: this model's labels are 0 to 2"),
    (dict(num_chunks=1, label=True), "label=True: must be a whole number, one of this model's labels 0 to 2"),
    (dict(num_chunks=1, label=1.0), "label=1.0: must be a whole number, one of this model's labels 0 to 2"),
], ids=["chunks-float", "chunks-text", "seed-float", "seed-2**64", "seed-negative", "label-null", "label-bool",
        "label-float"])
def test_bad_arguments_of_generate_are_one_setting_error(pipe, call, says):
    num_chunks = call.pop("num_chunks")
    with pytest.raises(SettingError) as error:
        next(pipe.generate(num_chunks, **call))
    assert str(error.value).startswith(says), str(error.value)


def test_a_label_of_the_model_is_taken_as_a_whole_number(pipe):
    assert next(pipe.generate(1, label=np.int64(2))).pixels.shape == (1, 1, 32, 32, 3)


@pytest.mark.parametrize("frames, says", [
    (np.zeros((0, 32, 32, 3), np.uint8), "holds no frames (B or T is 0)"),
    (torch.zeros(3, 0, 32, 32), "holds no frames (B or T is 0)"),
    (torch.full((3, 1, 32, 32), 200.0), "float32 values 200 .. 200: float frames must be in [-1, 1]; pass pixels "
                                        "in 0 .. 255 as uint8"),
    (torch.full((3, 1, 32, 32), math.nan), "holds NaN or infinite values; give finite values in [-1, 1]"),
    (torch.full((3, 1, 32, 32), math.inf), "holds NaN or infinite values"),
], ids=["uint8-no-frames", "float-no-frames", "float-0-255", "nan", "inf"])
def test_first_frames_are_checked_before_any_work(pipe, frames, says):
    with pytest.raises(SettingError, match="^first_frames=") as error:
        next(pipe.generate(1, first_frames=frames))
    assert says in str(error.value) and "weights" not in str(error.value), str(error.value)


def test_floats_in_range_and_uint8_pixels_are_continued(pipe):
    pixels = np.full((1, 32, 32, 3), 255, np.uint8)
    as_floats = torch.ones(3, 1, 32, 32)
    assert next(pipe.generate(1, first_frames=pixels)).pixels.shape == (1, 4, 32, 32, 3)
    assert np.array_equal(next(pipe.generate(1, first_frames=pixels)).pixels,
                          next(pipe.generate(1, first_frames=as_floats)).pixels)


@pytest.mark.parametrize("settings, says", [
    (dict(shift=math.nan), "shift=nan: must be a finite number in (0, 1000]"),
    (dict(cfg_scale=math.inf), "cfg_scale=inf: must be a finite number in [-1000, 1000]"),
    (dict(step_cache="teacache", step_cache_options={"threshold": math.nan}),
     "step_cache_options=threshold=nan: teacache's threshold must be a finite number >= 0"),
    (dict(step_cache="chunkcache", step_cache_options={"threshold": math.nan}),
     "step_cache_options=threshold=nan: chunkcache's threshold must be a finite number >= 0"),
    (dict(step_cache="adacache", step_cache_options={"growth_weight": math.inf}),
     "step_cache_options=growth_weight=inf: adacache's growth_weight must be a finite number >= 0"),
    (dict(step_cache="taylorseer", step_cache_options={"interval": 10 ** 30}),
     "step_cache_options=interval=" + "1" + "0" * 30 + ": taylorseer's interval must be a whole number in [1, 10000]"),
    (dict(device="meta"), "device=meta:"),
    (dict(dtype="fp8"), "dtype=fp8:"),
], ids=["shift-nan", "cfg-inf", "teacache-nan", "chunkcache-nan", "adacache-inf", "interval-huge", "device", "dtype"])
def test_bad_settings_of_load_pipeline_are_one_setting_error(settings, says):
    with pytest.raises(SettingError) as error:
        load_pipeline(DEMO, **{"device": "cpu", **settings})
    assert str(error.value).startswith(says), str(error.value)


def test_a_device_the_machine_lacks_is_refused_and_bf16_is_the_command_lines_spelling():
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(SettingError, match=f"^device={missing}: "):
        load_pipeline(DEMO, missing)
    assert load_pipeline(DEMO, "cpu", dtype="bf16").model.dtype == torch.bfloat16


def test_a_checkpoint_that_is_not_a_path_or_not_a_file_says_so():
    """load_pipeline(None) was a TypeError and a character device was 'not found'."""
    from ca2vdm.errors import CheckpointError

    with pytest.raises(CheckpointError, match="^checkpoint None is not a path; pass checkpoint with a .safetensors"):
        load_pipeline(None)
    with pytest.raises(CheckpointError, match="^checkpoint /dev/null is not a regular file \\(a device, pipe"):
        load_pipeline("/dev/null")
