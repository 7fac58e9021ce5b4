"""ca2vdm/errors.py: library messages name settings as the Python API spells them, and each command line renders
them as its own flags, so no library message names a flag."""
import numpy as np
import pytest

import ca2vdm
from ca2vdm.errors import CheckpointError, SettingError, opt

from helpers import cli_error


def test_a_message_is_spelled_by_each_front_end():
    error = CheckpointError(f"nothing to resume; pass {opt('resume', 'latest')} or rerun without {opt('resume')}")
    assert str(error) == "nothing to resume; pass resume=latest or rerun without resume"
    assert error.for_cli() == "nothing to resume; pass --resume latest or rerun without --resume"
    setting = SettingError("step_cache_options", "interval=0", "must be >= 1")
    assert str(setting) == "step_cache_options=interval=0: must be >= 1"
    assert setting.for_cli({"step_cache_options": "--step-cache-opt"}) == "--step-cache-opt interval=0: must be >= 1"
    assert str(CheckpointError("trained with codec {'kind': 'pixel'}")) == "trained with codec {'kind': 'pixel'}"


@pytest.mark.parametrize("call, api, flag", [
    (lambda ck: ca2vdm.load_pipeline(ck, "meta"), "device=meta: not supported", "--device meta: not supported"),
    (lambda ck: next(ca2vdm.load_pipeline(ck, "cpu").generate(1, seed=-1)), "seed=-1:",
     "argument --seed: must be a whole number in [0, 18446744073709551615], got '-1'"),
    (lambda ck: next(ca2vdm.load_pipeline(ck, "cpu").generate(1, label=3)), "label=3: out of range",
     "--label 3: out of range"),
    (lambda ck: ca2vdm.load_pipeline(ck, "cpu", dtype="fp8"), "dtype=fp8: not supported", None),
    (lambda ck: next(ca2vdm.load_pipeline(ck, "cpu").generate(1, first_frames=np.zeros((2, 2), np.uint8))),
     "first_frames=", None),
])
def test_the_api_names_settings_and_the_command_line_names_flags(checkpoint, tmp_path, capsys, call, api, flag):
    with pytest.raises(SettingError) as error:
        call(checkpoint)
    assert api in str(error.value) and "--" not in str(error.value)
    if flag:
        argv = {"--device": ["--device", "meta"], "--seed": ["--seed", "-1"], "--label": ["--label", "3"]}
        given = next(argv[name] for name in argv if name in flag)
        text = cli_error(capsys, "--checkpoint", checkpoint, "--out", tmp_path / "v.mp4", *given)
        assert flag in text and "Traceback" not in text
