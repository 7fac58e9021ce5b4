"""Prompts and switches through the Python API, the command line and the live demo server."""
import json
import re

import pytest
import torch
from fastapi.testclient import TestClient

import ca2vdm
import ca2vdm.cli.generate as cli
from ca2vdm.checkpoints.weights import save_weights
from ca2vdm.errors import SettingError
from ca2vdm.sampling.pipeline import LongVideoPipeline
from ca2vdm.serve import create_app
from ca2vdm.serve.catalog import Offered
from ca2vdm.serve.frames import pixel_chunks
from ca2vdm.serve.protocol import MAX_PROMPT_CHARS, SwitchMessage

from helpers import STEPS, cli_error, random_model
from serve_helpers import FakeModel, PacedSource, receive, receive_until, start, wait_for


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    """A tiny text model (WordLlama prompts, 8 tokens) with random weights, guided."""
    model = random_model(text_encoder="wordllama", text_dim=256, text_tokens=8)
    path = tmp_path_factory.mktemp("text") / "text.safetensors"
    save_weights(path, model.state_dict(), model.cfg,
                 {"diffusion_config": {"steps": STEPS, "shift": 1.0, "cond_noise": 0.05, "cfg_scale": 2.0}})
    return path


def _video(chunks) -> torch.Tensor:
    return torch.cat([c.latents for c in chunks], dim=2)


def test_api_prompt_and_switches(text_checkpoint):
    pipe = ca2vdm.load_pipeline(text_checkpoint)
    scheduled = _video(pipe.generate(3, prompt="a red circle", switches={1: "a blue square"}, seed=1))
    video, chunks = pipe.generate(3, prompt="a red circle", seed=1), []
    for chunk in video:
        chunks.append(chunk)
        if chunk.index == 0:
            video.switch(prompt="a blue square")  # from the next chunk on
    assert torch.equal(scheduled, _video(chunks))
    plain = _video(pipe.generate(3, prompt="a red circle", seed=1))
    assert torch.equal(plain[:, :, :3], scheduled[:, :, :3]) and not torch.equal(plain, scheduled)
    kept = _video(pipe.generate(3, prompt="a red circle", switches={1: "a blue square"}, switch_mode="keep", seed=1))
    assert torch.equal(kept[:, :, :3], scheduled[:, :, :3]) and not torch.equal(kept, scheduled)


def test_api_bad_prompts_and_switches(text_checkpoint, checkpoint):
    pipe = ca2vdm.load_pipeline(text_checkpoint)
    with pytest.raises(SettingError, match="prompt='': must be a non-empty text"):
        pipe.generate(2, prompt="")  # at once, before any chunk
    with pytest.raises(SettingError, match="label=1: this model is conditioned on prompts"):
        pipe.generate(2, label=1)
    with pytest.raises(SettingError, match="is 10 tokens long; this model reads at most 8"):
        pipe.generate(2, prompt="a red circle", switches={1: "a very small red circle drifting left very slowly"})
    with pytest.raises(SettingError, match="switch=2: is past the last chunk"):
        pipe.generate(2, prompt="a red circle", switches={2: "a blue square"})
    video = pipe.generate(3, prompt="a red circle")
    next(video), next(video)  # the first frame, chunk 0
    with pytest.raises(SettingError, match="switch=0: chunk 0 was already generated; the next chunk is 1"):
        video.switch(prompt="a blue square", at=0)
    with pytest.raises(SettingError, match="switch_mode=cut: must be one of recache, keep, reset"):
        video.switch(prompt="a blue square", mode="cut")
    labels = ca2vdm.load_pipeline(checkpoint)
    with pytest.raises(SettingError, match="conditioned on labels, not prompts; give a label"):
        labels.generate(2, prompt="a red circle")
    with pytest.raises(SettingError, match="conditioned on labels, not prompts"):
        labels.generate(2, label=0, switches={1: "a blue square"})
    assert _video(labels.generate(2, label=0, switches={1: 2}, seed=0)).shape[2] == 5  # labels switch the same way


def test_every_switch_and_prompt_is_checked_when_the_generation_is_asked_for(text_checkpoint, checkpoint,
                                                                              monkeypatch):
    """Switch problems were found only when the switch chunk came, after every earlier chunk was computed (keep in
    a cache mode that keeps nothing); a list of switches, a lone surrogate, a prompt of zero-width spaces or with a
    NUL byte raised raw errors or were taken. All are one SettingError at the call, and a switch's problem names the
    switch, not the generation's own prompt or label."""
    monkeypatch.setattr(LongVideoPipeline, "next_chunk", lambda *a, **k: pytest.fail("a chunk was computed"))
    text, labels = ca2vdm.load_pipeline(text_checkpoint), ca2vdm.load_pipeline(checkpoint)
    for pipe, given, new in [(text, {"prompt": "a red circle"}, "a blue square"), (labels, {"label": 1}, 2)]:
        for cache in ("none", "full"):
            with pytest.raises(SettingError, match=f"switch_mode=keep: needs cache=kv: cache mode {cache}"):
                pipe.with_settings(cache=cache).generate(4, **given, switches={3: new}, switch_mode="keep")
    with pytest.raises(SettingError, match="^switch=3=7: new label: out of range: this model's labels are 0 to 2"):
        labels.generate(4, label=1, switches={3: 7})
    too_long = "^switch=1='a very small red circle drifting left ve[.][.][.]': new prompt: is 10 tokens"
    with pytest.raises(SettingError, match=too_long):
        text.generate(2, prompt="a red circle", switches={1: "a very small red circle drifting left very slowly"})
    with pytest.raises(SettingError, match=r"^switches=list: give a dict \{chunk: new prompt"):
        text.generate(2, prompt="a red circle", switches=[(1, "a blue square")])
    with pytest.raises(SettingError, match=r"^switches=\[1\]=2.5: each new condition is a prompt"):
        labels.generate(2, label=1, switches={1: 2.5})
    for prompt, says in [("a red\ud800 circle", "a lone surrogate"), ("\u200b\u200b", "holds no visible character"),
                         ("a red\x00circle", "holds the control character U+0000")]:
        with pytest.raises(SettingError, match=re.escape(says)):
            text.generate(2, prompt=prompt)
        with pytest.raises(SettingError, match=f"^switch=1=.*: new prompt: .*{re.escape(says)}"):
            text.generate(2, prompt="a red circle", switches={1: prompt})


def test_cli_prompt_and_switch(text_checkpoint, tmp_path, capsys):
    out, stats = tmp_path / "v.mp4", tmp_path / "stats.json"
    cli.main(["--checkpoint", str(text_checkpoint), "--chunks", "3", "--prompt", "a red circle", "--switch",
              "1=a blue square", "--switch-mode", "reset", "--out", str(out), "--stats", str(stats)])
    recorded = json.loads(stats.read_text())
    assert out.exists() and recorded["frames"] == 7 and recorded["prompt"] == "a red circle"
    assert recorded["switches"] == {"1": "a blue square"} and recorded["switch_mode"] == "reset"


def test_cli_bad_input_one_line(text_checkpoint, checkpoint, tmp_path, capsys):
    out = str(tmp_path / "v.mp4")
    assert cli_error(capsys, "--checkpoint", text_checkpoint, "--label", "1", "--out", out) == \
        "error: --label 1: this model is conditioned on prompts, not labels; give a prompt instead"
    assert "--prompt 'a red circle': this model is conditioned on labels, not prompts" in cli_error(
        capsys, "--checkpoint", checkpoint, "--prompt", "a red circle", "--out", out)
    assert "--switch 5: is past the last chunk (1)" in cli_error(
        capsys, "--checkpoint", text_checkpoint, "--chunks", "2", "--prompt", "a red circle", "--switch",
        "5=a blue square", "--out", out)
    assert "--prompt ' ': must be a non-empty text" in cli_error(capsys, "--checkpoint", text_checkpoint, "--prompt",
                                                                 " ", "--out", out)
    assert "expected CHUNK=PROMPT" in cli_error(capsys, "--switch", "blue", "--out", out)
    assert cli_error(capsys, "--checkpoint", checkpoint, "--chunks", "5", "--label", "1", "--switch", "4=7", "--out",
                     out).startswith("error: --switch 4=7: new label: out of range")  # it blamed --label
    assert "--switch-mode keep: needs --cache kv: cache mode full" in cli_error(
        capsys, "--checkpoint", text_checkpoint, "--chunks", "5", "--prompt", "a red circle", "--switch",
        "4=a blue square", "--switch-mode", "keep", "--cache", "full", "--out", out)


def test_server_frames_follow_a_switch_like_the_api(text_checkpoint):
    pipe = ca2vdm.load_pipeline(text_checkpoint)
    offered = Offered("text", text_checkpoint, pipe, [])
    asked = {-1: [SwitchMessage(type="switch", prompt="a blue square", at=2)],  # before the first frame: for chunk 2
             3: [SwitchMessage(type="switch", prompt="a green triangle")]}  # before chunk 3: the next chunk
    chunks = list(pixel_chunks(offered, label=None, seed=2, chunks=4, step_cache="none", step_cache_options={},
                               first_frame=None, poll=lambda: None, prompt="a red circle",
                               switches=lambda upcoming: asked.get(upcoming, [])))
    expected = pipe.generate(4, prompt="a red circle", seed=2, switches={2: "a blue square", 3: "a green triangle"})
    assert len(chunks) == 5
    assert all((c.pixels == e.pixels[0]).all() for c, e in zip(chunks, expected))
    assert offered.describe()["prompts"] is True


def test_server_prompt_box_and_switch_messages():
    source = PacedSource()
    app = create_app({"fake": FakeModel(), "text": FakeModel("text", prompts=True)}, max_chunks=50, source=source)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_json({"type": "switch", "prompt": "a blue square"})
        assert "no generation is running" in receive(ws)[1]["message"]
        start(ws, label=1, prompt="a red circle")
        assert receive(ws)[1]["message"] == ("prompt='a red circle': this model is conditioned on labels, "
                                             "not prompts; give a label instead")
        ws.send_json({"type": "start", "model": "text", "label": 1})
        assert receive(ws)[1]["message"] == ("label=1: this model is conditioned on prompts, not labels; "
                                             "give a prompt instead")
        ws.send_json({"type": "start", "model": "text", "prompt": "x" * (MAX_PROMPT_CHARS + 1)})
        assert f"must be a text of 1 .. {MAX_PROMPT_CHARS} characters (not blank)" in receive(ws)[1]["message"]
        ws.send_json({"type": "start", "model": "text", "prompt": " a red circle ", "chunks": 3,
                      "switch_mode": "keep"})
        assert receive(ws)[0] == "started"
        assert wait_for(lambda: source.calls)
        assert (source.calls[0]["prompt"], source.calls[0]["switch_mode"]) == ("a red circle", "keep")
        ws.send_json({"type": "switch", "prompt": "a blue square"})
        assert receive(ws)[1] == {"type": "switched", "at": 0, "prompt": "a blue square", "label": None}
        ws.send_json({"type": "switch", "label": 2})
        assert receive(ws)[1]["message"] == ("label=2: this model is conditioned on prompts, not labels; "
                                             "give a prompt instead")
        ws.send_json({"type": "switch", "prompt": "a blue square", "label": 1})
        assert receive(ws)[1]["message"] == "'switch' needs a new prompt or a new label (one of them)"
        ws.send_json({"type": "switch", "prompt": "a blue square", "at": 3})
        assert receive(ws)[1]["message"].startswith("at=3: past the last chunk of this generation (2)")
        assert wait_for(lambda: source.switches is not None)
        taken = []
        assert wait_for(lambda: taken.extend(source.switches(0)) or taken)  # as the source takes them before a chunk
        assert taken == [SwitchMessage(type="switch", prompt="a blue square", at=0)]  # the next chunk, resolved
        ws.send_json({"type": "switch", "prompt": "a red square", "at": 0})  # chunk 0 is now being made
        assert receive(ws)[1]["message"].startswith("at=0: chunk 0 is already made (or being made); the first chunk "
                                                    "a switch can still change is 1")
        ws.send_json({"type": "switch", "prompt": " a red square ", "at": 1})
        assert receive(ws)[1] == {"type": "switched", "at": 1, "prompt": "a red square", "label": None}
        ws.send_json({"type": "switch", "prompt": "a blue circle", "at": 1})  # one switch per chunk, as elsewhere
        assert receive(ws)[1]["message"] == "at=1: chunk 1 already has a switch; give one per chunk"
        taken += source.switches(1)  # before chunk 1 (from now on chunk 1 is decided)
        assert taken[1] == SwitchMessage(type="switch", prompt="a red square", at=1)
        source.allow(3)
        done, chunks, _ = receive_until(ws, "done")
        assert done["reason"] == "finished" and len(chunks) == 3


def test_server_refuses_at_the_start_a_switch_mode_the_sampler_cannot_carry_out(text_checkpoint):
    """As the command line (before its first chunk): keep needs cache mode kv."""
    pipe = ca2vdm.load_pipeline(text_checkpoint).with_settings(cache="none")
    app = create_app({"text": Offered("text", text_checkpoint, pipe, [])}, max_chunks=5)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_json({"type": "start", "model": "text", "prompt": "a red circle", "switch_mode": "keep"})
        kind, message, _ = receive(ws)
        assert kind == "error" and message["message"].startswith("switch_mode=keep: needs cache=kv: cache mode none")
