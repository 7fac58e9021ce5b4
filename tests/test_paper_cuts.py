"""Round four's paper cuts: the README's checkpoint path exists after its own training command (``latest``),
``--device`` help names ``auto``, counts of one read "1 video", and a stop under torch's launcher says what the
launcher's ChildFailedError report means."""
from pathlib import Path

from ca2vdm.checkpoints.weights import weights_file
from ca2vdm.cli import generate, serve
from ca2vdm.cli.trainer import launcher_note
from ca2vdm.io.paths import latest_checkpoint

from helpers import run_command

ROOT = Path(__file__).resolve().parents[1]


def test_latest_is_the_newest_complete_step(tmp_path):
    checkpoints = tmp_path / "runs/demo/checkpoints"
    for name in ("step_000250", "step_002000", "step_000500", ".tmp-step_002250"):
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "ema.safetensors").write_bytes(b"weights")
    assert latest_checkpoint(checkpoints / "latest") == checkpoints / "step_002000"
    assert weights_file(checkpoints / "latest") == checkpoints / "step_002000/ema.safetensors"
    (checkpoints / "step_10000000").mkdir()  # more digits than the usual six: by number, not by name
    assert latest_checkpoint(checkpoints / "latest") == checkpoints / "step_10000000"
    assert latest_checkpoint(tmp_path / "latest") == tmp_path / "latest"  # nothing to pick: left as given


def test_device_help_names_auto(capsys):
    for tool in (generate, serve):
        try:
            tool.parse_args(["--help"])
        except SystemExit:
            pass
        text = " ".join(capsys.readouterr().out.split())
        assert "--device DEVICE auto (CUDA when present, else the CPU), cpu, cuda or cuda:N" in text, tool


def test_one_video_is_one_video(tmp_path, capsys):
    assert run_command("make-data", "--out", tmp_path, "--num-videos", 1, "--frames", 4, "--size", 16) == 0
    assert capsys.readouterr().out.startswith("wrote 1 video (4 frames")


def test_a_stop_under_torchs_launcher_explains_its_childfailederror_report():
    assert launcher_note(143, {}) == ""  # one process: no launcher report follows
    assert launcher_note(143, {"TORCHELASTIC_RUN_ID": "none"}) == (
        " (the launcher's ChildFailedError report below is this stop: exitcode 143 means the checkpoint was saved, "
        "nothing failed)")
