"""infer/long_video.py: outputs that would destroy something are refused before any work, a stop (SIGINT, SIGTERM)
keeps the finished chunks as a playable mp4, and bad options are one message naming the flag. Tiny random model."""
import os
import re
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest
from PIL import Image

import ca2vdm.generation.api as api
from ca2vdm.io.paths import VIDEO_NAME

from helpers import CHUNK, cli, cli_error
from test_generate import CLI_PATH


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the CLI gets as far as loading the model."""
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded: the check did not come before the work")

    monkeypatch.setattr(api, "load_model", load_model)


def _png(path, value: int = 90):
    Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(path)
    return path


def _destructive_case(case: str, shared_checkpoint, tmp):
    """(argv, the text the error must contain, {file: bytes it must keep}); a copy of the checkpoint is at stake."""
    checkpoint = tmp / "tiny.safetensors"
    checkpoint.write_bytes(shared_checkpoint.read_bytes())
    given = _png(tmp / "given.png")
    ckpt_dir = tmp / "step_000010"
    ckpt_dir.mkdir()
    (ckpt_dir / "ema.safetensors").write_bytes(checkpoint.read_bytes())
    old = tmp / "old.mp4"
    old.write_bytes(b"an earlier video")
    fifo = tmp / "fifo.mp4"
    os.mkfifo(fifo)
    cases = {
        "checkpoint": (["--out", checkpoint, "--overwrite"], "is the checkpoint"),
        "in checkpoint dir": (["--checkpoint", ckpt_dir, "--out", ckpt_dir / "v.mp4"], "inside the checkpoint"),
        "input": (["--first-frame", given, "--out", given, "--overwrite"], "is the --first-frame input"),
        "preview is out": (["--out", tmp / "v.png", "--preview"], "the --preview sheet"),
        "stats is out": (["--out", tmp / "v.mp4", "--stats", tmp / "v.mp4"], "--stats"),
        "stats is checkpoint": (["--out", tmp / "v.mp4", "--stats", checkpoint], "is the checkpoint"),
        "not a regular file": (["--out", fifo, "--overwrite"], "not a regular file"),
        "exists": (["--out", old], "--overwrite"),
        "stats is a directory": (["--out", tmp / "v.mp4", "--stats", tmp], "--stats"),
    }
    argv, message = cases[case]
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", checkpoint, *argv]
    return argv, message, {p: p.read_bytes() for p in (checkpoint, given, old, ckpt_dir / "ema.safetensors")}


@pytest.mark.parametrize("case", ["checkpoint", "in checkpoint dir", "input", "preview is out", "stats is out",
                                  "stats is checkpoint", "not a regular file", "exists", "stats is a directory"])
def test_output_that_would_destroy_something_is_refused_before_any_work(checkpoint, tmp_path, capsys, no_work,
                                                                        case):
    argv, message, keep = _destructive_case(case, checkpoint, tmp_path)
    assert message in cli_error(capsys, *argv)
    assert all(path.read_bytes() == data for path, data in keep.items())
    assert (tmp_path / "fifo.mp4").is_fifo() and not (tmp_path / "v.mp4").exists()
    assert not (tmp_path / "v.png").exists() and not list(tmp_path.glob(".*partial*"))


def test_overwrite_replaces_an_existing_video(checkpoint, tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"an earlier video")
    cli.main(["--checkpoint", str(checkpoint), "--out", str(out), "--chunks", "1", "--overwrite"])
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1 + CHUNK


def test_trailing_slash_means_a_directory(checkpoint, tmp_path):
    cli.main(["--checkpoint", str(checkpoint), "--out", f"{tmp_path / 'new' / 'dir'}/", "--chunks", "1"])
    assert (tmp_path / "new" / "dir").is_dir() and (tmp_path / "new" / "dir" / VIDEO_NAME).is_file()


def test_default_output_is_replaced_by_the_next_run(checkpoint, tmp_path, monkeypatch, capsys):
    """The README's main command (no --out) must work twice in a row: its default output is scratch. The replacement
    is said (it was silent), and a run without --preview removes the earlier run's contact sheet, which showed
    another video (it was left beside the new mp4)."""
    monkeypatch.chdir(tmp_path)
    video, sheet = tmp_path / "outputs" / "long_video.mp4", tmp_path / "outputs" / "long_video.png"
    cli.main(["--checkpoint", str(checkpoint), "--chunks", "1", "--preview"])
    assert "replaced" not in capsys.readouterr().out  # nothing was there
    cli.main(["--checkpoint", str(checkpoint), "--chunks", "1", "--preview"])
    assert video.is_file() and sheet.is_file()
    assert "replaced the earlier outputs/long_video.mp4: runs without --out" in capsys.readouterr().out
    cli.main(["--checkpoint", str(checkpoint), "--chunks", "2", "--seed", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("replaced the earlier outputs/long_video.mp4 and removed its contact sheet")
    assert video.is_file() and not sheet.exists()


# A stop keeps the finished chunks --------------------------------------------------------------------------------

# The CLI as a terminal's foreground process would run it: SIGINT raises KeyboardInterrupt. (A process started in the
# background of a non-interactive shell inherits SIGINT ignored, and the CLI leaves an ignored SIGINT ignored.)
_FOREGROUND = "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); " \
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def _chunks_done(log) -> int:
    """Chunks finished so far, from the progress bar in the stderr log."""
    counts = re.findall(r"(\d+)/100000 \[", log.read_text(errors="replace"))
    return int(counts[-1]) if counts else 0


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_stop_keeps_the_finished_chunks_as_a_playable_video(checkpoint, tmp_path, sig, code):
    out, log = tmp_path / "v.mp4", tmp_path / "stderr.log"
    argv = [sys.executable, "-c", _FOREGROUND, str(CLI_PATH), "--checkpoint", str(checkpoint), "--out", str(out),
            "--chunks", "100000"]
    with open(log, "w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 120
        while proc.poll() is None and _chunks_done(log) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and _chunks_done(log) >= 3, log.read_text()[-2000:]
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    err = log.read_text()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1].split("\r")[-1]
    found = re.fullmatch(rf"stopped by {sig.name}: kept (\d+) of 100000 chunks \((\d+) frames\) in (.+)", line)
    assert found, line
    chunks, frames = int(found[1]), int(found[2])
    assert found[3] == str(out) and chunks >= 3 and frames == 1 + chunks * CHUNK
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames
    assert not list(tmp_path.glob(".*"))  # no .partial.mp4 left behind


# Bad options: one message naming the flag, before any work ----------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--seed", str(2 ** 70)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--device", "meta"], "--device meta: not supported; use auto, cpu, cuda or cuda:N"),
    (["--device", "mps"], "--device mps"),
    (["--teacache-thresh", "nan"], "--teacache-thresh"),
    (["--teacache-thresh", "-0.5"], "--teacache-thresh"),
    (["--first-frame", "/dev/null"], "/dev/null is not a regular file"),
    (["--first-frame", "{tmp}"], "is a directory"),
])
def test_bad_option_is_one_message_before_any_work(checkpoint, tmp_path, capsys, no_work, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = tmp_path / "v.mp4"
    text = cli_error(capsys, "--checkpoint", checkpoint, "--out", out, *argv)
    assert message in text and "Traceback" not in text
    assert not out.exists()


@pytest.mark.parametrize("label", ["3", "-1"])
def test_label_outside_the_model_classes_is_refused(checkpoint, tmp_path, capsys, label):
    """3 is the null label of a 3-class model: it used to be accepted."""
    out = tmp_path / "v.mp4"
    assert "--label" in cli_error(capsys, "--checkpoint", checkpoint, "--out", out, "--label", label, "--chunks", "1")
    assert not out.exists()


def _write_header_first(path, codec: str, frames: int = 40) -> bytes:
    """A random video with its index before the data (movflags faststart), so a cut copy still opens."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(frames):
            frame = np.random.default_rng(t).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path.read_bytes()


@pytest.mark.parametrize("damage, message", [
    ("cut-h264", "Invalid data"),           # H.264 cut in half: decoding fails
    ("cut-mpeg4", "frames decode"),         # MPEG-4 cut in half: its first frames decode without an error
    ("garbage", "Invalid data"),
    ("empty", "empty (0 bytes)"),
])
def test_unreadable_first_frame_message_names_the_file_and_the_problem_only(checkpoint, tmp_path, capsys, damage,
                                                                              message):
    """Decord put its own source path into one message (video_reader.cc, for an H.264 file cut after its header)."""
    bad = tmp_path / f"{damage}.mp4"
    if damage.startswith("cut"):
        data = _write_header_first(bad, "libx264" if damage == "cut-h264" else "mpeg4")
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"not a video" * 50 if damage == "garbage" else b"")
    out = tmp_path / "v.mp4"
    text = cli_error(capsys, "--checkpoint", checkpoint, "--out", out, "--first-frame", bad, "--chunks", "1")
    assert str(bad) in text and message in text, text
    assert not re.search(r"\.cc|\.cpp|github|Errno|\[\d", text), text
    assert not out.exists() and not list(tmp_path.glob(".*"))
