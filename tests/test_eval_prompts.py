"""Reading prompts back (ca2vdm/evaluation/prompt_adherence.py), prompt switches (prompt_switches.py) and the
figures of ``ca2vdm eval prompts``."""
import json

import numpy as np
import pytest
import torch

from ca2vdm.config import ChunkLayout
from ca2vdm.data.captioned import Attributes, render_captioned_video
from ca2vdm.evaluation.prompt_adherence import ShapeReader, check_reader, read_back
from ca2vdm.evaluation.prompt_switches import followed, switch_seam

from helpers import run_command


def test_reader_reads_rendered_shapes_back_even_across_the_border():
    reader = ShapeReader.fit(videos_per_shape=12)
    assert check_reader(reader, videos=3) >= 0.95
    # a square split across the frame's corner (a torus) is still a square
    video = render_captioned_video(np.random.default_rng(0), Attributes("blue", "square", "large", "left", "slowly"),
                                   4, 32)
    rolled = np.roll(np.roll(video, 16, axis=1), 16, axis=2)
    assert read_back(torch.from_numpy(rolled), reader) == ("blue", "square")
    assert read_back(torch.zeros(4, 32, 32, 3, dtype=torch.uint8), reader) == (None, None)  # nothing to read


def test_chunks_to_follow_and_seam():
    new, old = ("blue", "square"), ("red", "circle")
    assert followed([old, old, new, new, new], new, at=2) == 1
    assert followed([old, old, old, new, new], new, at=2) == 2
    assert followed([old, old, new, old, new], new, at=2) == 3  # must stay followed
    assert followed([old, old, old, old, old], new, at=2) is None
    assert followed(["red", "red", "blue", "blue"], "blue", at=2) == 1  # the colour alone
    video = np.zeros((9, 4, 4, 3), np.uint8)
    video[1:5] = np.arange(4)[:, None, None, None] * 10  # a ramp inside the first chunk (1 .. 4): steps of 10
    video[5:] = video[4] + 10 + np.arange(4)[:, None, None, None] * 10  # the next chunk continues it: seam 10
    assert abs(switch_seam(video, ChunkLayout(4), 1, range(0, 2)) - 1.0) < 1e-6  # chunk 1 starts at frame 5


def test_the_command_writes_every_figure(tmp_path, checkpoint):
    from ca2vdm.checkpoints.weights import save_weights

    from helpers import STEPS, random_model

    model = random_model(text_encoder="wordllama", text_dim=256, text_tokens=12)
    path = tmp_path / "text.safetensors"
    save_weights(path, model.state_dict(), model.cfg, {"diffusion_config": {"steps": STEPS, "cfg_scale": 2.0}})
    out = tmp_path / "prompts.json"
    refused = run_command("eval", "prompts", "--checkpoint", path, "--json", tmp_path)  # before any work
    assert refused == f"error: --json {tmp_path}: is a directory; give the path of a file to write"
    assert run_command("eval", "prompts", "--checkpoint", path, "--json", out, "--videos", 1, "--chunks", 1,
                       "--seeds", 1, "--switch-at", 2, "--after", 2, "--cost-repeats", 1, "--label-checkpoint",
                       checkpoint, "--sheet", tmp_path / "sheet.png") == 0
    figures = json.loads(out.read_text())
    assert 0 <= figures["adherence_train"] <= 1 and 0 <= figures["adherence_heldout"] <= 1
    assert set(figures["switch"]) == {"recache", "keep", "reset", "flush"}
    for mode in figures["switch"].values():
        assert mode["chunks_to_follow"] is None or 1 <= mode["chunks_to_follow"] <= 6
        assert mode["chunks_to_colour"] is None or 1 <= mode["chunks_to_colour"] <= 6
        assert len(mode["per_video_chunks_to_colour"]) == len(mode["per_video_chunks_to_follow"])
        assert mode["seam"] > 0
    assert figures["cost"]["text_over_label_flops"] > 1 and figures["cost"]["commit_passes_in_recache"] == 3
    assert len(figures["videos"]["train"]) == 15 and (tmp_path / "sheet.png").exists()
    cost = tmp_path / "cost.json"
    assert run_command("eval", "prompts", "--checkpoint", path, "--json", cost, "--cost-only", "--cost-repeats", 1,
                       "--label-checkpoint", checkpoint) == 0
    only = json.loads(cost.read_text())
    assert set(only) == {"checkpoint", "sampler", "cost"} and only["cost"]["text_over_label"] > 0


@pytest.mark.parametrize("args, says", [
    (["--chunks", "-1"], "argument --chunks: must be a whole number in [1, 1000], got '-1'"),
    (["--videos", "0"], "argument --videos: must be a whole number in [1, 1000], got '0'"),
    (["--cost-repeats", "0"], "argument --cost-repeats: must be a whole number in [1, 1000], got '0'"),
    (["--cfg-scale", "nan"], "argument --cfg-scale: must be a finite number in [-1000, 1000], got 'nan'"),
    (["--switch-at", "1"], "argument --switch-at: must be a whole number in [2, 1000], got '1'"),
    (["--switch-at", "1001"], "argument --switch-at: must be a whole number in [2, 1000], got '1001'"),
])
def test_bad_numbers_are_one_line_before_any_work(tmp_path, capsys, monkeypatch, args, says):
    """--chunks -1 reported adherence 0.00 and ran on; --videos 0, --cost-repeats 0 and --cfg-scale nan were
    tracebacks after minutes."""
    monkeypatch.setattr("ca2vdm.cli.eval_prompts.run", lambda *a: pytest.fail("worked before checking"))
    assert run_command("eval", "prompts", "--json", tmp_path / "p.json", *args) == 2
    assert says in capsys.readouterr().err


def test_a_label_model_and_a_stop_are_one_line(tmp_path, checkpoint, monkeypatch):
    """A label model as --checkpoint (or a text model as --label-checkpoint) was a traceback; so was Ctrl-C."""
    out = tmp_path / "p.json"
    assert run_command("eval", "prompts", "--checkpoint", checkpoint, "--json", out, "--cost-only") == (
        f"error: --checkpoint {checkpoint}: is not a text model (it takes labels, not prompts); give a text model's "
        "weights, e.g. checkpoints/text-demo.safetensors")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("ca2vdm.cli.eval_prompts.run", interrupted)
    assert run_command("eval", "prompts", "--json", out) == \
        "stopped by SIGINT before the figures were measured; nothing written"
    assert not out.exists()
