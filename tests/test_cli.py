"""The trainers' shared command line (ca2vdm/cli/trainer.py, run as ``ca2vdm train`` and friends): overrides
anywhere, the section each trainer needs, and the warning for an accelerate launch that starts fewer processes than
asked."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ca2vdm.cli.main import main as ca2vdm_main

from helpers import run_program

ROOT = Path(__file__).resolve().parents[1]
TINY, AE_TINY = str(ROOT / "configs/tiny.yaml"), str(ROOT / "configs/ae-tiny.yaml")


def _run(capsys, *argv):
    """``ca2vdm ARGV`` in this process (``train`` is what train/train.py runs): (exit code, what it printed to
    stderr)."""
    with pytest.raises(SystemExit) as info:
        ca2vdm_main(list(argv))
    code = info.value.code
    if isinstance(code, str):  # sys.exit("error: ...") prints the text and exits 1
        return 1, code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command, config, flag", [
    ("train", TINY, ["--no-progress"]),
    ("train", TINY, ["--resume", "latest"]),
    ("train-autoencoder", AE_TINY, ["--no-progress"]),
    ("encode-latents", TINY, ["--device", "cpu"]),
])
def test_overrides_after_a_flag_reach_the_config(capsys, tmp_path, command, config, flag):
    """An override before and one after the flag both arrive (the misspelt key is the config loader's complaint, not
    argparse's 'unrecognized arguments')."""
    out = ["--out", str(tmp_path / "latents")] if command == "encode-latents" else []
    code, err = _run(capsys, command, "--config", config, *out, "train.max_steps=1", *flag, "train.lrr=1")
    assert code in (1, 2) and "Key 'lrr' not in 'TrainConfig'" in err and "unrecognized" not in err, err


def test_overrides_after_a_flag_are_applied(capsys, tmp_path, shapes):
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, "train", "--config", TINY, "--no-progress",
                     f"data.root={tmp_path / 'empty'}", f"train.output_dir={tmp_path / 'out'}")
    assert code == 1 and f"no video files in {tmp_path / 'empty'}" in err, err
    code, err = _run(capsys, "train", "--config", TINY, f"data.root={shapes}", "--resume",
                     "latest", f"train.output_dir={tmp_path / 'out'}", "--no-progress")
    assert code == 1 and f"--resume latest: no checkpoint under {tmp_path / 'out' / 'checkpoints'}" in err, err


def test_overrides_after_a_flag_in_bench_objective():
    """The experiment's config loader gets both overrides (run as a program: no test imports a script)."""
    proc = run_program("scripts/experiments/bench_objective.py", "train.max_steps=1", "--seconds", 1, "train.lrr=1",
                       timeout=300)
    assert proc.returncode != 0 and "ConfigError" in proc.stderr, proc.stderr[-2000:]
    assert "Key 'lrr' not in 'TrainConfig'" in proc.stderr and "unrecognized" not in proc.stderr


def test_malformed_leftover_arguments_are_one_clear_error(capsys):
    code, err = _run(capsys, "train", "--config", TINY, "--no-progress", "--bogus")
    assert code == 2 and "unrecognized arguments: --bogus" in err
    code, err = _run(capsys, "train", "--config", TINY, "--no-progress", "train.max_steps")
    assert code == 2 and "override 'train.max_steps' is not key=value" in err


def test_each_trainer_refuses_the_other_trainers_config(capsys, tmp_path):
    """Every other section has defaults: without this check each trainer trained a default model on the other's
    config (the autoencoder ignored model and diffusion)."""
    out = f"train.output_dir={tmp_path / 'out'}"
    code, err = _run(capsys, "train-autoencoder", "--config", TINY, "--no-progress", out)
    assert code == 2 and err.count("error:") == 1, err
    assert (f"config {TINY} has no autoencoder section, which train/train_autoencoder.py trains: it is a video-model "
            "config (model section), for train/train.py; pass an autoencoder config (e.g. configs/ae-tiny.yaml)") in err
    code, err = _run(capsys, "train", "--config", AE_TINY, "--no-progress", out)
    assert code == 2 and (f"config {AE_TINY} has no model section, which train/train.py trains: it is an autoencoder "
                          "config (autoencoder section), for train/train_autoencoder.py") in err, err
    assert not (tmp_path / "out").exists()


def test_cpu_launch_of_two_processes_says_how_to_get_two(tmp_path):
    """accelerate launch --cpu --num_processes 2 starts one process (--cpu wants an MPI hostfile for more): the run
    says so and gives the launch that starts two CPU processes."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train/train.py"), "--config", TINY,
           f"data.root={tmp_path}", f"train.output_dir={tmp_path / 'out'}"]  # no videos: stops right after the check
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ("warning: accelerate launch asked for 2 processes but started 1 (with --cpu it starts one unless given an "
            "MPI hostfile); for 2 processes on the CPU run: CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu "
            "--num_processes 2 ") in proc.stderr, proc.stderr[-3000:]
