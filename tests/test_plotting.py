"""Plots are optional: a benchmark script without matplotlib writes its JSON and says in one line that it skipped
the plot, instead of crashing at the very end after minutes of measurement (ca2vdm/io/plotting.py)."""
import json
import sys

import pytest

from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.io.plotting import plot_or_skip

from helpers import random_model, run_program


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = random_model(num_classes=3)  # the script passes label 0 by default
    path = tmp_path_factory.mktemp("plot") / "tiny.safetensors"
    save_weights(path, model.state_dict(), model.cfg, {"diffusion_config": {"steps": 2, "cfg_scale": 1.0}})
    return path


@pytest.mark.parametrize("matplotlib", [False, True], ids=["without-matplotlib", "with-matplotlib"])
def test_bench_ar_scaling_writes_its_json_and_plots_only_with_matplotlib(checkpoint, tmp_path, matplotlib):
    result = run_program("scripts/bench/ar_scaling.py", "--checkpoint", checkpoint, "--chunks", 2, "--repeats", 1,
                         "--out-dir", tmp_path, matplotlib=matplotlib, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert json.loads((tmp_path / "ar_scaling.json").read_text())["summary"]["speedup_kv_over_none"] > 0
    assert (tmp_path / "ar_scaling.png").exists() == matplotlib
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped the plot")]
    if matplotlib:
        assert not skipped and f"and {tmp_path / 'ar_scaling.png'}" in result.stdout
    else:
        assert skipped == [f"skipped the plot {tmp_path / 'ar_scaling.png'}: matplotlib is not installed "
                           '(pip install -e ".[plot]", or bash scripts/setup.sh); the JSON holds every figure']


def _line_plot(values, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    ax.plot(values)
    fig.savefig(path)
    plt.close(fig)


def test_plot_or_skip_draws_the_file_with_matplotlib(tmp_path, capsys):
    path = tmp_path / "line.png"
    assert plot_or_skip(_line_plot, [1, 3, 2], path=path) is True
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"  # a PNG of the figure's 4 x 3 inches at 50 dpi
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (200, 150)
    assert capsys.readouterr().out == ""


def test_plot_or_skip_without_matplotlib_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    called = []
    assert plot_or_skip(lambda *args: called.append(args), [1], path=tmp_path / "line.png") is False
    assert not called and not (tmp_path / "line.png").exists()
    assert capsys.readouterr().out == (f"skipped the plot {tmp_path / 'line.png'}: matplotlib is not installed (pip "
                                       'install -e ".[plot]", or bash scripts/setup.sh); the JSON holds every '
                                       "figure\n")
