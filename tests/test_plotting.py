"""Plots are optional: a benchmark script without matplotlib writes its JSON and says in one line that it skipped
the plot, instead of crashing at the very end after minutes of measurement (ca2vdm/plotting.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ca2vdm.checkpoints.weights import save_weights

from helpers import random_model

ROOT = Path(__file__).resolve().parents[1]
# runs a script as __main__; with "nompl" first, matplotlib cannot be imported (as on a machine without it)
RUN = ("import runpy, sys; args = sys.argv[1:]\n"
       "if args[0] == 'nompl': sys.modules['matplotlib'] = None; args = args[1:]\n"
       "sys.argv = args; runpy.run_path(args[0], run_name='__main__')")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = random_model(num_classes=3)  # the script passes label 0 by default
    path = tmp_path_factory.mktemp("plot") / "tiny.safetensors"
    save_weights(path, model.state_dict(), model.cfg, {"diffusion_config": {"steps": 2, "cfg_scale": 1.0}})
    return path


@pytest.mark.parametrize("matplotlib", [False, True], ids=["without-matplotlib", "with-matplotlib"])
def test_bench_ar_scaling_writes_its_json_and_plots_only_with_matplotlib(checkpoint, tmp_path, matplotlib):
    cmd = [sys.executable, "-c", RUN, *([] if matplotlib else ["nompl"]), str(ROOT / "scripts/bench_ar_scaling.py"),
           "--checkpoint", str(checkpoint), "--chunks", "2", "--repeats", "1", "--out-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert json.loads((tmp_path / "ar_scaling.json").read_text())["summary"]["speedup_kv_over_none"] > 0
    assert (tmp_path / "ar_scaling.png").exists() == matplotlib
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped the plot")]
    if matplotlib:
        assert not skipped and f"and {tmp_path / 'ar_scaling.png'}" in result.stdout
    else:
        assert skipped == [f"skipped the plot {tmp_path / 'ar_scaling.png'}: matplotlib is not installed "
                           '(pip install -e ".[plot]", or bash scripts/setup.sh); the JSON holds every figure']
