"""``ca2vdm calibrate`` checks its arguments before any sampling (counts of at least 1, a degree of 1 to 8)
and refuses a TeaCache degree the asked-for samples cannot support, so no coefficients near 1e34 reach a checkpoint;
the library's fit refuses pairs that cannot determine the polynomial."""
import shutil
from pathlib import Path

import pytest

from ca2vdm.checkpoints.weights import read_metadata
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.sampling.step_cache import fit_polynomial

from helpers import run_command

ROOT = Path(__file__).resolve().parents[1]


def calibrate(*args) -> object:
    """The command in this process: its exit code or message (0 when it ran through)."""
    return run_command("calibrate", *args)


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.safetensors"
    shutil.copy(ROOT / "checkpoints/demo.safetensors", path)
    return path


@pytest.mark.parametrize("args, says", [
    (["--seeds", "0"], "argument --seeds: must be a whole number >= 1, got '0'"),
    (["--seeds", "-1"], "argument --seeds: must be a whole number >= 1, got '-1'"),
    (["--chunks", "0"], "argument --chunks: must be a whole number >= 1, got '0'"),
    (["--degree", "-1"], "argument --degree: must be a whole number in [1, 8], got '-1'"),
    (["--degree", "30"], "argument --degree: must be a whole number in [1, 8], got '30'"),
    (["--seeds", "1", "--chunks", "1"], "error: --degree 4 needs at least 50 (input, output change) pairs (10 per "
                                        "coefficient), but --seeds 1 --chunks 1 at 16 steps record about 15; pass "
                                        "--seeds 4 or more, or more --chunks, or a lower --degree"),
    (["--checkpoint", "no-such.safetensors"], "error: checkpoint no-such.safetensors not found"),
], ids=["seeds-0", "seeds-negative", "chunks-0", "degree-negative", "degree-30", "too-few-pairs", "missing"])
def test_bad_arguments_stop_before_any_sampling(demo, monkeypatch, capsys, args, says):
    def sampled(*args, **kwargs):
        raise AssertionError("sampled before the arguments were checked")

    monkeypatch.setattr(LongVideoPipeline, "generate", sampled)
    before = demo.read_bytes()
    code = calibrate("--checkpoint", demo, *args)
    message = code if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert code not in (0, None) and says in message, message
    assert demo.read_bytes() == before


def test_a_supported_degree_is_fitted_and_stored(demo, capsys):
    assert calibrate("--checkpoint", demo, "--seeds", "1", "--chunks", "2", "--degree", "2") == 0
    assert "R^2 = " in capsys.readouterr().out
    stored = read_metadata(demo)
    assert len(stored["teacache_coefficients"]) == 3 and stored["teacache_fit"]["pairs"] >= 30


def test_the_fit_refuses_pairs_that_cannot_determine_the_polynomial():
    pairs = [(0.01 * i, 0.02 * i) for i in range(1, 16)]  # 15 pairs: the report's degree-30 fit gave ~1e34
    with pytest.raises(ValueError, match="a degree-30 polynomial needs at least 31 distinct .* pairs, got 15"):
        fit_polynomial(pairs, degree=30)
    with pytest.raises(ValueError, match="needs at least 5 distinct"):
        fit_polynomial([(0.5, 1.0)] * 100, degree=4)  # many pairs, one input change
