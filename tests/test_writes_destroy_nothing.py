"""Nothing the project writes replaces a directory, a device, a pipe or a socket, with or without overwrite: one
shared check (``io.paths.check_writable_file``) guards every writer (exports, videos, contact sheets, weights, latent
shards, text files). Pipes, sockets and links to them stand in for devices such as /dev/null, which a test must never
risk. A VideoWriter replaces an existing file only with ``overwrite``; write_video onto a folder is one error."""
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from ca2vdm.errors import SettingError
from ca2vdm.generation.api import load_pipeline, write_video
from ca2vdm.io.atomic import save_tensors_atomic, write_text_atomic
from ca2vdm.io.video import VideoWriter, read_video, save_contact_sheet

from helpers import run_command

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo.safetensors"
FRAMES = np.full((2, 16, 16, 3), 99, np.uint8)


@pytest.fixture(params=["pipe", "socket", "link-to-pipe"])
def special(request, tmp_path):
    """A path that exists and is not a regular file; yields it, then checks it is still what it was."""
    path = tmp_path / f"special-{request.param}.safetensors"
    held = None
    if request.param == "pipe":
        os.mkfifo(path)
    elif request.param == "socket":
        held = socket.socket(socket.AF_UNIX)
        held.bind(str(path))
    else:
        os.mkfifo(tmp_path / "target")
        path.symlink_to(tmp_path / "target")
    mode = os.stat(path).st_mode
    yield path
    assert os.stat(path).st_mode == mode and not stat.S_ISREG(mode)  # untouched: still a pipe or socket
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # and no temporary file is left
    if held is not None:
        held.close()


def export(*args) -> str:
    """``ca2vdm export`` in this process: its error line ('' when it succeeded)."""
    return str(run_command("export", *args) or "")


def test_export_never_replaces_a_device_pipe_or_socket(special):
    for extra in ([], ["--overwrite"]):
        error = export(DEMO, special, *extra)
        assert error == f"error: DST {special}: exists and is not a regular file (a device, pipe or socket): " \
                        "writing would replace it; choose a file path", error


def test_export_destination_must_be_a_safetensors_file(tmp_path):
    assert export(DEMO, tmp_path / "weights.txt") == (f"error: {tmp_path / 'weights.txt'} does not end in "
                                                      ".safetensors: an export is a safetensors weights file; name "
                                                      "it so, e.g. checkpoints/<name>.safetensors")
    assert not list(tmp_path.iterdir())
    assert export(DEMO, tmp_path / "weights.safetensors") == ""


def test_no_writer_replaces_a_device_pipe_or_socket(special):
    for write in (lambda: save_tensors_atomic(special, {"x": torch.zeros(1)}),
                  lambda: write_text_atomic(special, "text"),
                  lambda: VideoWriter(special, fps=8, overwrite=True),
                  lambda: save_contact_sheet(FRAMES, special, frames_per_row=2)):
        with pytest.raises(SettingError, match="exists and is not a regular file"):
            write()


def test_write_video_refuses_a_pipe_and_a_folder_even_with_overwrite(special, tmp_path):
    pipe = load_pipeline(DEMO, "cpu", steps=1)
    with pytest.raises(SettingError, match="exists and is not a regular file"):
        write_video(pipe.generate(1), special, overwrite=True)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    with pytest.raises(SettingError, match=f"^path={folder}: is a directory; give the path of a file to write$"):
        write_video(pipe.generate(1), folder, overwrite=True)
    assert folder.is_dir() and not list(folder.iterdir())


def test_video_writer_replaces_an_existing_file_only_with_overwrite(tmp_path):
    path = tmp_path / "mine.mp4"
    path.write_bytes(b"my own file")
    with pytest.raises(SettingError, match="already exists; pass overwrite to replace it"):
        VideoWriter(path, fps=8)
    assert path.read_bytes() == b"my own file" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.mp4"]
    with VideoWriter(path, fps=8, overwrite=True) as writer:
        writer.write(FRAMES)
    assert read_video(path).shape == (3, 2, 16, 16)
