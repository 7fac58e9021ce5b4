"""A full disk is named as such (ca2vdm/write_errors.py), whichever library was writing, and loses nothing.

The errors are the ones seen on a full 1 MiB tmpfs (torch 2.13, safetensors 0.8): torch's zip writer drops the errno
and says "unexpected pos"; a full disk then shows (next to) no free space.
"""
import errno
import hashlib
import json
import re
import runpy
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from ca2vdm.checkpoints.weights import load_model
from ca2vdm.config import load_config
from ca2vdm.errors import CheckpointWriteError
from ca2vdm.io import write_errors
from ca2vdm.io.write_errors import describe_write_error
from ca2vdm.training import run_files, run_lock
from ca2vdm.training.checkpoint_dirs import step_dirs
from ca2vdm.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
Usage = namedtuple("Usage", "total used free")


def _free(monkeypatch, free):
    monkeypatch.setattr(write_errors.shutil, "disk_usage", lambda path: Usage(2**40, 2**40 - free, free))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def test_full_disk_during_a_save_says_so_and_loses_nothing(shapes, tmp_path, monkeypatch):
    config = load_config(ROOT / "configs/tiny.yaml", [f"data.root={shapes}", f"train.output_dir={tmp_path}",
                                                      "train.batch_size=2", "train.max_steps=8", "train.save_every=4"])
    root, save, before = tmp_path / "checkpoints", torch.save, {}

    def disk_fills_at_step_8(obj, f, *args, **kwargs):  # accelerate writes optimizer.bin etc. with torch.save
        if ".tmp-step_000008" in str(f):
            before.update(_digest(root / "step_000004"))
            Path(f).write_bytes(b"PK\x03\x04" + bytes(500))  # what the zip writer got onto the disk
            _free(monkeypatch, 0)
            raise TORCH_FULL
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_at_step_8)
    with pytest.raises(CheckpointWriteError) as info:
        train(config, progress_bar=False)
    message = str(info.value)
    assert message == (f"could not write checkpoint {root / 'step_000008'}: No space left on device in {root} (0.0 MiB "
                       f"free); the previous checkpoint {root / 'step_000004'} is intact. Free space on that disk or "
                       "choose another train.output_dir, then rerun with resume=latest"), message
    assert before and _digest(root / "step_000004") == before  # nothing previously saved changed
    assert step_dirs(root) == [root / "step_000004"] and not list(root.glob(".t*-*"))
    assert not (tmp_path / run_lock.LOCK_NAME).exists()
    monkeypatch.setattr(torch, "save", save)  # space freed: the advice works
    train(config, resume="latest", progress_bar=False)
    assert load_model(root / "step_000008")[1].step == 8
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, 9))


@pytest.mark.parametrize("error, free, says", [
    (TORCH_FULL, 0, "No space left on device"),
    (TORCH_FULL, 12 * 2**30, "RuntimeError: [enforce fail"),  # space left: some other write failure, kept as is
    (OSError(errno.ENOSPC, "No space left on device"), 12 * 2**30, "No space left on device"),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), 5 * 2**20,
     "No space left on device in"),  # safetensors
    (OSError(errno.EDQUOT, "Disk quota exceeded"), 12 * 2**30, "disk quota exceeded in"),
    (PermissionError(errno.EACCES, "Permission denied"), 12 * 2**30, "PermissionError"),
])
def test_write_errors_are_named(tmp_path, monkeypatch, error, free, says):
    _free(monkeypatch, free)
    problem, fix = describe_write_error(error, tmp_path / "not/made/yet", "another train.output_dir")
    assert problem.startswith(says), problem
    if re.match(r"No space|disk quota", problem):
        assert str(tmp_path / "not/made/yet") in problem and "another train.output_dir" in fix


def test_full_disk_while_logging_is_one_line(shapes, tmp_path, monkeypatch, capsys):
    """Not only checkpoints: a full disk under the metrics log ends the run with one error line, no traceback."""
    log = run_files.log_metrics

    def disk_full_at_step_2(path, **values):
        if values["step"] == 2:
            _free(monkeypatch, 0)
            raise OSError(errno.ENOSPC, "No space left on device")
        log(path, **values)

    monkeypatch.setattr(run_files, "log_metrics", disk_full_at_step_2)
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", str(ROOT / "configs/tiny.yaml"), "--no-progress",
                                      f"data.root={shapes}", f"train.output_dir={tmp_path}", "train.batch_size=2"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "train/train.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert info.value.code == 1 and err == (f"error: No space left on device in {tmp_path} (0.0 MiB free) while "
                                            "training; checkpoints already saved are intact. Free space on that disk "
                                            "or choose another train.output_dir, then rerun with --resume latest\n")
    assert not (tmp_path / run_lock.LOCK_NAME).exists()
