"""A GPU machine's set-up: ``bash scripts/setup.sh --cuda`` (its commands, from a dry run: no install here), and what
``--device cuda`` says on a CPU build of PyTorch versus a CUDA build on a machine without a GPU."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ca2vdm.errors import SettingError
from ca2vdm.runtime.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


def _setup(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """scripts/setup.sh run from a scratch checkout without .venv."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    return subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **env})


def test_setup_cuda_installs_the_cuda_build_from_pytorchs_index(tmp_path):
    proc = _setup(tmp_path, "--dry-run", "--cuda")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "python3 -m venv .venv",
        f".venv/bin/pip install -q torch==2.13.0+cu128 --index-url {CUDA_INDEX}",
        ".venv/bin/pip install -q -e .[test,plot,serve]"]
    other = _setup(tmp_path, "--cuda", "--dry-run", TORCH_INDEX_URL="https://download.pytorch.org/whl/cu126")
    assert "torch==2.13.0+cu126 --index-url https://download.pytorch.org/whl/cu126" in other.stdout
    assert not (tmp_path / ".venv").exists()  # a dry run makes nothing


def test_setup_without_cuda_keeps_the_cpu_build(tmp_path):
    proc = _setup(tmp_path, "--dry-run")
    assert proc.returncode == 0 and proc.stdout.splitlines()[1] == ".venv/bin/pip install -q torch==2.13.0"
    bad = _setup(tmp_path, "--gpu")
    assert bad.returncode == 2 and bad.stderr == ("error: unknown option --gpu; usage: bash scripts/setup.sh [--cuda] "
                                                  "[--dry-run]\n")


def test_cuda_on_a_cpu_build_says_how_to_install_the_cuda_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(SettingError) as error:
        resolve_device("cuda:0")
    assert str(error.value) == (f"device=cuda:0: this PyTorch ({torch.__version__}) is a CPU build, without CUDA; on a "
                                "machine with an NVIDIA GPU install its CUDA build with bash scripts/setup.sh --cuda "
                                "(or use cpu)")


def test_cuda_build_without_a_gpu_keeps_its_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    with pytest.raises(SettingError, match="device=cuda: CUDA is not available on this machine; use cpu \\(or auto\\)"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
