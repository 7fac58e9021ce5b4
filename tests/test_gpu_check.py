"""scripts/gpu_check.sh --dry-run: the GPU check's whole path (CUDA tests, XL benchmark, compile speed-up, training
MFU, Wan's memory estimate, VAE streaming and end-to-end frames per second, report) on the CPU with the tiny preset,
so the script is known to work before a GPU is lent."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--dry-run", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(s["name"], s["exit"]) for s in summary["steps"]] == [
        ("cuda_tests", 0), ("xl_benchmark", 0), ("compile_speedup", 0), ("train_mfu", 0), ("wan_memory", 0),
        ("wan_vae", 0), ("wan_fps", 0)]
    assert summary["dry_run"] and summary["failed_steps"] == []
    tests = summary["cuda_tests"]
    assert tests["tests"] == tests["skipped"] >= 4 and tests["failures"] == tests["errors"] == 0  # no GPU here
    xl = summary["xl"]
    assert set(xl["seconds_total"]) == {"kv", "none", "full"} and xl["weights"].startswith("random")
    assert 0 < xl["kv_cache_mb"] and 0 < xl["weights_mb"] < xl["peak_mb"]
    assert xl["flop_ratio_full_over_kv"] > 1
    assert summary["compile"]["compile_seconds_kv"] > 0 and summary["compile"][
        "speedup_kv_compiled_per_full_window_chunk"] > 0
    train = summary["train"]
    off, on = train["activation_checkpointing_off"], train["activation_checkpointing_on"]
    assert off["loss"] == on["loss"] and off["steps_per_second"] > 0 and on["steps_per_second"] > 0
    assert summary["wan_memory"]["480x832 bf16"]["text_encoder_offloaded"] > 0
    wan_vae = summary["wan_vae"]
    assert wan_vae["vae"] == "tiny" and wan_vae["streamed_vs_whole_max_abs"] <= 1e-4
    assert wan_vae["feature_cache_mb"][0] == wan_vae["feature_cache_mb"][-1] > 0
    wan_fps = summary["wan_fps"]
    assert wan_fps["model"] == "tiny" and set(wan_fps["modes"]) == {"kv", "none", "kv+taylorseer", "kv+compile"}
    assert all(r["fps"] > 0 and r["time_to_first_frame_s"] > 0 for r in wan_fps["modes"].values())
    assert wan_fps["compile_seconds"] > 0 and wan_fps["steps"] == 4 and wan_fps["chunk_frames"] == 3
    assert all(g["met"] is None for g in summary["goals"].values())  # a dry run judges no GPU goal
    assert "# GPU check (dry run" in (tmp_path / "summary.md").read_text()


def test_a_gpu_run_whose_cuda_tests_all_skipped_fails(tmp_path):
    """On a GPU (no --dry-run) a CUDA test step that ran nothing is a failure, although pytest exited 0."""
    (tmp_path / "steps.tsv").write_text("cuda_tests\t0\t3\n")
    (tmp_path / "cuda_tests.xml").write_text('<testsuites><testsuite tests="6" failures="0" errors="0" skipped="6">'
                                             "</testsuite></testsuites>")
    report = [sys.executable, str(ROOT / "scripts/gpu_report.py"), str(tmp_path)]
    assert subprocess.run(report, capture_output=True).returncode == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed_steps"] == ["cuda_tests"] and "no CUDA test ran" in summary["cuda_tests_problem"]
    assert subprocess.run(report + ["--dry-run"], capture_output=True).returncode == 0  # expected on a CPU
    (tmp_path / "cuda_tests.xml").write_text('<testsuites><testsuite tests="6" failures="0" errors="0" skipped="2">'
                                             "</testsuite></testsuites>")
    assert subprocess.run(report, capture_output=True).returncode == 0


def test_the_checkouts_venv_is_the_default_and_an_interpreter_without_torch_stops_at_once(tmp_path):
    """Without PYTHON the check runs the checkout's .venv/bin/python (the system python has no torch); an
    interpreter that cannot import torch is one line before any step (each of the four steps used to fail alike)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/gpu_check.sh", checkout / "scripts")
    python = checkout / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\nexit 1\n')  # a venv without torch
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = subprocess.run(["bash", str(checkout / "scripts/gpu_check.sh"), "--dry-run", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {python} cannot import torch; run bash scripts/setup.sh (it makes .venv), or point "
                           "PYTHON at an interpreter with PyTorch: PYTHON=/path/to/python scripts/gpu_check.sh ...\n")
    assert (python.parent / "calls").read_text() == "-c import torch\n" and not (tmp_path / "out").exists()
