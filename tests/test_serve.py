"""The live demo server (ca2vdm/serve): streaming per chunk, Stop and disconnect, the queue, and the shipped model
end to end through FastAPI's test client."""
import decord
import numpy as np
import pytest
from fastapi.testclient import TestClient

import ca2vdm
from ca2vdm.sampling.step_cache import POLICIES
from ca2vdm.serve import create_app, load_catalog
from ca2vdm.serve.catalog import FPS
from ca2vdm.serve.protocol import CHUNK_FIELDS

from serve_helpers import FakeModel, PacedSource, receive, receive_until, start, wait_for


@pytest.fixture
def paced():
    source = PacedSource()
    app = create_app({"fake": FakeModel()}, max_chunks=50, max_queue=2, source=source)
    with TestClient(app) as client:
        yield client, source, app.state.serve


def test_hello_offers_the_servers_models_and_the_registrys_policies(paced):
    client, _, _ = paced
    with client.websocket_connect("/ws") as ws:
        kind, hello, _ = receive(ws)
    assert kind == "hello"
    assert [m["name"] for m in hello["models"]] == ["fake"]
    assert hello["models"][0]["labels"] == ["circle", "square", "triangle"]
    assert [p["name"] for p in hello["policies"]] == list(POLICIES) and hello["max_chunks"] == 50
    assert {p["name"]: p["options"] for p in hello["policies"]}["teacache"] == {"threshold": 0.1}
    assert hello["device"] == "cpu" and hello["threads"] >= 1


def test_each_chunk_arrives_before_the_next_is_computed(paced):
    client, source, _ = paced
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=3, label=2, seed="7", step_cache="teacache", step_cache_options={"threshold": 0.2})
        assert receive(ws)[0] == "started"
        source.allow(1)
        kind, header, pixels = receive(ws)
        # chunk 0 is on the page while chunk 1 cannot have been computed yet: streamed, not sent at the end
        assert kind == "chunk" and source.finished == 1
        assert set(header) == set(CHUNK_FIELDS) and header["index"] == 0 and header["chunks_done"] == 1
        assert pixels.shape == (4, 32, 32, 3) and (pixels == 0).all()
        assert (header["computed"], header["skipped"], header["total_frames"]) == (3, 1, 4)
        source.allow(2)
        done, chunks, _ = receive_until(ws, "done")
    assert [h["index"] for h, _ in chunks] == [1, 2] and [int(p[0, 0, 0, 0]) for _, p in chunks] == [1, 2]
    assert (done["reason"], done["frames"], done["chunks"]) == ("finished", 12, 3)
    assert chunks[-1][0]["computed_total"] == 9 and chunks[-1][0]["skipped_total"] == 3
    assert source.calls[0] == {"model": "fake", "label": 2, "seed": 7, "chunks": 3, "step_cache": "teacache",
                               "step_cache_options": {"threshold": 0.2}, "first_frame": None,
                               "first_frame_existed": False, "prompt": None, "switch_mode": "recache"}


def test_the_server_stays_at_most_lead_frames_ahead_of_the_page(paced):
    client, source, state = paced
    lead = state.hello()["lead_frames"]
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=50)
        receive(ws)
        source.allow(50)
        for _ in range(lead // 4 + 1):
            assert receive(ws)[0] == "chunk"
        ws.send_json({"type": "stop"})
        done, chunks, _ = receive_until(ws, "done")
    # without "shown" messages the page has shown nothing: one chunk beyond the lead, then it waits for the page
    assert done["frames"] == 4 * (lead // 4 + 1) and not chunks and source.finished == lead // 4 + 1


def test_stop_ends_the_generation_within_one_chunk_and_keeps_what_was_shown(paced):
    client, source, state = paced
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=None)
        assert receive(ws)[1]["until_stopped"]
        source.allow(2)
        first = [receive(ws)[2] for _ in range(2)]
        ws.send_json({"type": "stop"})
        done, chunks, _ = receive_until(ws, "done")
        assert (done["reason"], done["frames"], chunks) == ("stopped", 8, [])
        # no chunk was finished after the stop; one in progress was abandoned at its next step
        assert source.finished == 2 and source.started - 2 == source.cancelled.is_set()
        video = client.get(done["download"])
        assert video.status_code == 200 and done["filename"] == "ca2vdm-fake-seed0.mp4"
    path = state.temp_root / "shown.mp4"
    path.write_bytes(video.content)
    decoded = decord.VideoReader(str(path)).get_batch(list(range(8))).asnumpy()
    assert len(decord.VideoReader(str(path))) == 8
    assert np.abs(decoded.astype(int) - np.concatenate(first).astype(int)).max() <= 2  # 8 frames, as shown


def test_closing_the_page_stops_its_generation_and_deletes_its_files(paced):
    client, source, state = paced
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=None)
        receive(ws)
        source.allow(1)
        assert receive(ws)[0] == "chunk"
    assert wait_for(lambda: not state.queue.busy)  # the generation ended with the page
    assert source.finished == 1 and source.started - 1 == source.cancelled.is_set()
    with client.websocket_connect("/ws") as ws:  # the device was handed back: a new page generates at once
        receive(ws)
        start(ws, chunks=1)
        assert receive(ws)[0] == "started"
        source.allow(1)
        done, _, _ = receive_until(ws, "done")
        assert done["reason"] == "finished"
    assert wait_for(lambda: not any(state.temp_root.iterdir()))  # both pages' folders are gone


def test_other_pages_queue_with_their_position_and_a_full_queue_is_refused(paced):
    client, source, _ = paced
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b, \
            client.websocket_connect("/ws") as c, client.websocket_connect("/ws") as d:
        for ws in (a, b, c, d):
            receive(ws)
        start(a, chunks=None)
        assert receive(a)[0] == "started"
        start(b, chunks=1)
        assert receive(b)[1] == {"type": "queued", "position": 1}
        start(c, chunks=1)
        assert receive(c)[1] == {"type": "queued", "position": 2}
        start(d, chunks=1)
        kind, error, _ = receive(d)
        assert kind == "error" and "the queue is full" in error["message"] and "--max-queue 2" in error["message"]
        b.send_json({"type": "stop"})  # leaving the queue moves c up
        assert receive_until(b, "done")[0] == {"type": "done", "reason": "stopped", "frames": 0, "chunks": 0,
                                                "download": None}
        assert receive(c)[1] == {"type": "queued", "position": 1}
        a.send_json({"type": "stop"})
        assert receive_until(a, "done")[0]["reason"] == "stopped"
        assert receive(c)[0] == "started"  # one generation per device: c starts only once a has ended
        # a (until stopped: up to --max-chunks), then c; b left the queue without running
        assert [call["chunks"] for call in source.calls] == [50, 1]
        source.allow(1)
        assert receive_until(c, "done")[0]["reason"] == "finished"
    assert source.finished == 1 and len(source.calls) == 2


def test_until_stopped_ends_at_max_chunks(paced):
    client, source, _ = paced
    client.app.state.serve.max_chunks = 2
    with client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=None)
        assert receive(ws)[1]["chunks"] == 2
        source.allow(2)
        done, chunks, _ = receive_until(ws, "done")
    assert (done["reason"], done["chunks"], len(chunks)) == ("limit", 2, 2)


@pytest.fixture(scope="module")
def shipped():
    """The shipped demo model behind a real server application."""
    catalog = load_catalog(["checkpoints/demo.safetensors"], "cpu")
    with TestClient(create_app(catalog, max_chunks=4)) as client:
        yield client, catalog["demo"]


def test_shipped_model_streams_the_command_lines_video(shipped):
    client, offered = shipped
    with client.websocket_connect("/ws") as ws:
        kind, hello, _ = receive(ws)
        assert hello["models"][0]["labels"] == ["circle", "square", "triangle"]  # named in the checkpoint
        ws.send_json({"type": "start", "model": "demo", "label": 1, "seed": 3, "chunks": 2, "step_cache": "teacache",
                      "step_cache_options": {"threshold": 0.2}})
        done, chunks, _ = receive_until(ws, "done")
        video = client.get(done["download"]).content
    assert [h["kind"] for h, _ in chunks] == ["first", "chunk", "chunk"]
    assert [p.shape for _, p in chunks] == [(1, 32, 32, 3), (4, 32, 32, 3), (4, 32, 32, 3)]
    assert chunks[-1][0]["skipped_total"] > 0 and chunks[-1][0]["fps"] > 0 and done["fps"] == chunks[-1][0]["fps"]
    # the same frames as the Python API (and so the command line) with the same settings
    api = ca2vdm.load_pipeline(offered.path, "cpu", step_cache="teacache", step_cache_options={"threshold": 0.2})
    for (_, got), want in zip(chunks, api.generate(2, label=1, seed=3), strict=True):
        np.testing.assert_array_equal(got, want.pixels[0])
    path = client.app.state.serve.temp_root / "download.mp4"
    path.write_bytes(video)
    reader = decord.VideoReader(str(path))
    assert len(reader) == 9 == done["frames"] and round(reader.get_avg_fps()) == FPS
