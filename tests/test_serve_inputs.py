"""Bad input to the live demo server: each gets one clear message on the page, and the server goes on serving;
uploads are checked, used and deleted."""
import io
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ca2vdm.io.video import VideoWriter
from ca2vdm.serve import create_app, load_catalog
from ca2vdm.serve.protocol import MAX_UPLOAD_BYTES

from serve_helpers import FakeModel, PacedSource, receive, receive_until, start, wait_for

BAD_STARTS = [
    ({"model": "../../etc/passwd"}, 'model="../../etc/passwd": not offered by this server; choose one of: fake'),
    ({"model": ["demo"]}, 'model=["demo"]: must be the name of a model this server offers'),
    ({"label": 3}, "label=3: out of range: this model's labels are 0 to 2"),
    ({"label": -1}, "label=-1: must be a whole number >= 0"),
    ({"label": "square"}, 'label="square": must be a whole number >= 0'),
    ({"label": True}, "label=true: must be a whole number >= 0"),
    ({"chunks": 51}, "chunks=51: beyond this server's limit of 50 (--max-chunks); ask for at most 50"),
    ({"chunks": 0}, "chunks=0: must be a whole number >= 1, or null (until stopped)"),
    ({"chunks": 2.5}, "chunks=2.5: must be a whole number >= 1"),
    ({"seed": -4}, "seed=-4: must be a whole number in 0 .. 2**64 - 1"),
    ({"seed": 2 ** 64}, "seed=18446744073709551616: must be a whole number in 0 .. 2**64 - 1"),
    ({"seed": "abc"}, 'seed="abc": must be a whole number in 0 .. 2**64 - 1'),
    ({"seed": "\u00b2"}, 'seed="\\u00b2": must be a whole number in 0 .. 2**64 - 1'),
    ({"seed": "9" * 5000}, 'seed="' + "9" * 39 + '... (5002 characters): must be a whole number in 0 .. 2**64 - 1'),
    ({"step_cache": "warp"}, 'step_cache="warp": must be one of none, teacache, magcache, taylorseer, chunkcache, '
                             "fastercache, adacache"),
    ({"step_cache": {"a": 1}}, 'step_cache={"a": 1}: must be one of none, teacache'),
    ({"step_cache": "teacache", "step_cache_options": {"threshold": -0.1}},
     "step_cache_options=threshold=-0.1: teacache's threshold must be a finite number >= 0"),
    ({"step_cache": "teacache", "step_cache_options": {"threshold": "high"}},
     "step_cache_options=threshold=high: teacache's threshold must be a finite number >= 0"),
    ({"step_cache": "chunkcache", "step_cache_options": {"threshold": "nan"}},
     "step_cache_options=threshold=nan: chunkcache's threshold must be a finite number >= 0"),
    ({"step_cache_options": {"threshold": 0.2}},
     "step_cache_options=threshold: needs a step cache (step_cache is none)"),
    ({"step_cache_options": [0.2]}, "step_cache_options=[0.2]: must be an object of the step cache's settings"),
    ({"first_frame": "yes"}, 'first_frame="yes": must be true or false'),
    ({"first_frame": True}, "first_frame is set but no image or video was uploaded"),
    ({"resolution": 512}, "unknown field resolution in 'start'; its fields: type, model, label, seed, chunks"),
]
BAD_MESSAGES = [
    ("hello there", "malformed message (not JSON: expected value at line 1 column 1): \"hello there\""),
    ("[1, 2]", "malformed message: a JSON array, not an object; send a JSON object whose 'type' is 'start', "
               "'switch', 'stop' or 'shown'"),
    ('{"type": "explode"}', 'malformed message: unknown type "explode"'),
    ('{"frames": 3}', "malformed message: unknown type null"),
    ('{"type": "shown", "frames": -1}', "frames=-1: must be a whole number in 0 .. 2**53"),
    ('{"type": "shown", "frames": "' + "9" * 5000 + '"}', 'frames="99999999999999999999999999999999999999'),
    ('{"type": "shown", "frames": ' + "9" * 5000 + "}", "malformed message (not JSON: number out of range"),
    ('{"type": "shown", "frames": 1e30}', "frames=1e+30: must be a whole number in 0 .. 2**53"),
    ('{"type": "shown"}', "'shown' needs frames: a whole number in 0 .. 2**53"),
    ('{"type": "stop", "now": true}', "unknown field now in 'stop'"),
    ("[" * 30000, "malformed message (not JSON: recursion limit exceeded"),
    ("[" * 100000, "the message is 100000 characters long, over the limit of 65536"),
]


@pytest.fixture(scope="module")
def server():
    source = PacedSource()
    app = create_app({"fake": FakeModel(), "plain": FakeModel("plain", labels=[])}, max_chunks=50, source=source)
    with TestClient(app) as client:
        yield client, source, app.state.serve


def still_serving(ws, source) -> None:
    """After a refused message the same page can still generate."""
    start(ws, chunks=1)
    assert receive(ws)[0] == "started"
    source.allow(1)
    assert receive_until(ws, "done")[0]["reason"] == "finished"


def png_bytes(size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size + 8, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("fields,message", BAD_STARTS, ids=[next(iter(f)) + str(i) for i, (f, _) in
                                                             enumerate(BAD_STARTS)])
def test_a_bad_start_is_refused_with_a_clear_message(server, fields, message):
    client, source, _ = server
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, **fields)
        kind, error, _ = receive(ws)
        assert kind == "error" and error["message"].startswith(message)
        still_serving(ws, source)


@pytest.mark.parametrize("text,message", BAD_MESSAGES, ids=range(len(BAD_MESSAGES)))
def test_a_malformed_message_is_refused_with_a_clear_message(server, text, message):
    client, source, _ = server
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_text(text)
        kind, error, _ = receive(ws)
        assert kind == "error" and error["message"].startswith(message)
        still_serving(ws, source)


def test_a_label_for_an_unconditional_model_is_refused(server):
    client, _, _ = server
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_json({"type": "start", "model": "plain", "label": 0})
        assert receive(ws)[1]["message"] == "label=0: this model is unconditional; give no label"


def test_a_second_start_while_generating_is_refused(server):
    client, source, _ = server
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=1)
        receive(ws)
        start(ws, chunks=1)
        assert receive(ws)[1]["message"] == "a generation is already running in this tab; press Stop first"
        source.allow(1)
        assert receive_until(ws, "done")[0]["reason"] == "finished"


@pytest.mark.parametrize("data,message", [
    (b"just some text, not a picture", "the upload is not an image or video that can be read"),
    (b"\x00\x00\x00\x18ftypmp42" + bytes(200), "the upload is not an image or video that can be read"),
    (b"", "the upload is empty (0 bytes)"),
    (bytes(MAX_UPLOAD_BYTES + 1), "the upload is 8.0 MiB (8388609 bytes), over the limit of 8 MiB (8388608 bytes)"),
], ids=["text", "broken-mp4", "empty", "oversized"])
def test_a_bad_upload_is_refused_and_nothing_is_kept(server, data, message):
    client, source, state = server
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_bytes(png_bytes())
        assert receive(ws)[1] == {"type": "upload", "kind": "image", "bytes": len(png_bytes())}
        ws.send_bytes(data)  # replaces the good upload, and is refused
        kind, error, _ = receive(ws)
        assert kind == "error" and error["message"].startswith(message)
        assert [p.name for p in state.temp_root.glob("*/upload.*")] == []
        start(ws, first_frame=True)
        assert "no image or video was uploaded" in receive(ws)[1]["message"]
        still_serving(ws, source)


def test_an_upload_is_used_once_then_deleted(server, tmp_path):
    client, source, state = server
    video = tmp_path / "given.mp4"
    with VideoWriter(video, fps=8) as writer:
        writer.write(np.full((6, 32, 32, 3), 90, np.uint8))
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_bytes(video.read_bytes())
        assert receive(ws)[1]["kind"] == "video"
        assert len(list(state.temp_root.glob("*/upload.*"))) == 1
        start(ws, chunks=1, first_frame=True)
        receive(ws)
        source.allow(1)
        assert receive_until(ws, "done")[0]["reason"] == "finished"
        assert source.calls[-1]["first_frame_existed"]
        assert list(state.temp_root.glob("*/upload.*")) == []  # deleted after its generation


def test_shipped_model_continues_an_uploaded_image():
    with TestClient(create_app(load_catalog(["checkpoints/demo.safetensors"], "cpu"), max_chunks=2)) as client, \
            client.websocket_connect("/ws") as ws:
        receive(ws)
        image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        ws.send_bytes(buffer.getvalue())
        receive(ws)
        ws.send_json({"type": "start", "model": "demo", "chunks": 1, "first_frame": True})
        done, chunks, _ = receive_until(ws, "done")
    assert [h["kind"] for h, _ in chunks] == ["given", "chunk"] and done["frames"] == 5
    np.testing.assert_array_equal(chunks[0][1], image[None])  # shown first, exactly as given


def test_serve_cli_defaults_and_one_line_errors(capsys):
    from ca2vdm.cli.serve import main, parse_args

    args = parse_args([])
    assert (args.host, args.port, args.device) == ("127.0.0.1", 7860, "cpu")
    assert [p.rsplit("/", 1)[-1] for p in args.checkpoint] == ["demo.safetensors"]
    with pytest.raises(SystemExit) as missing:
        main(["--checkpoint", "checkpoints/no-such-model.safetensors"])
    assert str(missing.value).startswith("error: ") and "no-such-model.safetensors" in str(missing.value)
    with pytest.raises(SystemExit) as twice:
        main(["--checkpoint", "checkpoints/demo.safetensors", "checkpoints/demo.safetensors"])
    assert str(twice.value) == "error: --checkpoint lists the same checkpoint twice; give each once"
    with pytest.raises(SystemExit):
        parse_args(["--max-queue", "-1"])
    assert "--max-queue: must be a whole number >= 0, got '-1'" in capsys.readouterr().err


def test_a_generation_that_cannot_start_is_reported_and_frees_the_device(server, monkeypatch):
    from ca2vdm.serve import session

    client, source, state = server

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with client.websocket_connect("/ws") as ws:
        receive(ws)
        monkeypatch.setattr(session, "VideoWriter", full_disk)
        start(ws, chunks=1)
        done, _, others = receive_until(ws, "done")
        assert others == [{"type": "error", "message": "generation failed: [Errno 28] No space left on device"}]
        assert (done["reason"], done["frames"], state.queue.busy) == ("error", 0, False)
        monkeypatch.undo()
        still_serving(ws, source)


@pytest.mark.parametrize("argv,line", [
    (["--port", "{busy}"], "error: --port {busy}: the port is already in use (another server?); choose another "
                           "--port or stop the program using it"),
    (["--host", "no-such-host.invalid"], "error: --host no-such-host.invalid: not a known address"),
    (["--port", "70000"], "serve.py: error: argument --port: must be a whole number in [1, 65535], got '70000'"),
], ids=["port-in-use", "unknown-host", "port-out-of-range"])
def test_a_server_that_cannot_listen_says_so_in_one_line_and_leaves_nothing(tmp_path, argv, line):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        argv = [a.replace("{busy}", port) for a in argv]
        (tmp_path / "tmp").mkdir()
        env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
        proc = subprocess.run([sys.executable, "infer/serve.py", *argv], capture_output=True, text=True, env=env,
                              timeout=120)
    assert proc.returncode in (1, 2) and "serving" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith(line.replace("{busy}", port)), proc.stderr
    assert "Traceback" not in proc.stderr and list((tmp_path / "tmp").iterdir()) == []


def test_connections_that_send_half_a_header_are_closed_and_the_page_goes_on():
    """200 connections that sent half an HTTP header were still open after 16 s (one after 60 s). The server closes
    a connection whose request headers are not in within its header time-out (here 0.5 s), also one that trickles a
    byte at a time; a page's WebSocket, whose headers came at once, stays open as long as it likes."""
    import threading
    import time
    import urllib.request

    import uvicorn
    from websockets.sync.client import connect

    from ca2vdm.serve.connections import server_config

    app = create_app({"fake": FakeModel()}, max_chunks=5, source=PacedSource())
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, header_timeout=0.5, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started)
        with connect(f"ws://127.0.0.1:{port}/ws") as page:
            assert '"hello"' in page.recv(timeout=30)
            slow = []
            for _ in range(20):
                client = socket.create_connection(("127.0.0.1", port))
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a header, and then nothing
                slow.append(client)
            trickle = socket.create_connection(("127.0.0.1", port))
            deadline = time.monotonic() + 30  # a liveness bound, not a timing assertion
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    trickle.sendall(b"X")  # one byte of a header, again and again
                    time.sleep(0.1)
                except OSError:
                    closed = True
            assert closed
            for client in slow:
                client.settimeout(30)
                try:
                    assert client.recv(1024) == b""  # closed by the server
                except ConnectionResetError:
                    pass
                client.close()
            page.send('{"type": "nonsense"}')  # the page's WebSocket, open for longer than the time-out, answers
            assert "unknown type" in page.recv(timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)
