"""A page cannot hold the device for ever: one that stops acknowledging frames is dropped (and told so), one that
claims to have shown more than it was sent gains nothing, a page waits in the queue for a bounded time, and its
switches are answered one by one at a bounded rate."""
import pytest
from fastapi.testclient import TestClient

from ca2vdm.serve import create_app
from ca2vdm.serve.protocol import MAX_PENDING_SWITCHES, SWITCH_BURST, SWITCH_RATE, ProtocolError, SwitchMessage
from ca2vdm.serve.run import RunControl, Stalled

from serve_helpers import FakeModel, PacedSource, receive, receive_until, start, wait_for

TIMEOUT = 0.3  # seconds; the tests assert what happens after it, never how long anything took


def serve(**limits):
    source = PacedSource()
    app = create_app({"fake": FakeModel()}, max_chunks=50, max_queue=2, source=source, **limits)
    return TestClient(app), source, app.state.serve


def test_a_page_that_shows_no_frame_is_dropped_and_the_next_page_gets_the_device():
    client, source, state = serve(ack_timeout=TIMEOUT)
    lead = state.hello()["lead_frames"]
    with client, client.websocket_connect("/ws") as silent, client.websocket_connect("/ws") as waiting:
        receive(silent), receive(waiting)
        start(silent, chunks=None)  # and never a "shown": a client that does not answer, or a frozen tab
        assert receive(silent)[0] == "started"
        start(waiting, chunks=1)
        assert receive(waiting)[1] == {"type": "queued", "position": 1}
        source.allow(50)
        done, chunks, others = receive_until(silent, "done")
        assert done["reason"] == "stalled" and done["frames"] == 4 * (lead // 4 + 1) == 4 * len(chunks)
        assert [m["type"] for m in others] == ["error"]
        assert others[0]["message"].startswith(f"this tab showed no new frame for {TIMEOUT:g} s (a hidden tab, or "
                                               "a connection too slow for the video): the generation was ended")
        assert receive(waiting)[0] == "started"  # the device went to the next page
        assert receive_until(waiting, "done")[0]["reason"] == "finished"


def test_shown_counts_at_most_the_frames_sent():
    client, source, state = serve()
    lead = state.hello()["lead_frames"]
    with client, client.websocket_connect("/ws") as ws:
        receive(ws)
        start(ws, chunks=50)
        assert receive(ws)[0] == "started"
        ws.send_json({"type": "shown", "frames": 2 ** 40})  # before any frame was sent: counts as 0
        ws.send_json({"type": "shown", "frames": 10 ** 30})  # beyond any count a page can hold: refused
        assert receive(ws)[1]["message"].startswith("frames=1" + "0" * 30 + ": must be a whole number in 0 .. 2**53")
        source.allow(50)
        for _ in range(lead // 4 + 1):
            assert receive(ws)[0] == "chunk"
        ws.send_json({"type": "stop"})
        done, chunks, _ = receive_until(ws, "done")
    # one chunk beyond the lead, then it waited for the page (before, the claim switched the bound off)
    assert (done["frames"], chunks, source.finished) == (4 * (lead // 4 + 1), [], lead // 4 + 1)


def test_run_control_counts_at_most_what_was_sent_and_drops_a_silent_page():
    control = RunControl(lead_frames=4, ack_timeout=TIMEOUT)
    control.mark_sent(8)
    control.set_shown(2 ** 40)
    assert control.shown == 8
    control.wait_for_page(12)  # 4 ahead: no wait
    control.mark_sent(20)
    with pytest.raises(Stalled):  # 12 ahead and no acknowledgement comes
        control.wait_for_page(20)
    control.set_shown(16)
    control.wait_for_page(20)  # caught up: no wait


def test_a_page_waits_in_the_queue_for_a_bounded_time():
    client, source, state = serve(queue_timeout=TIMEOUT)
    with client, client.websocket_connect("/ws") as busy, client.websocket_connect("/ws") as waiting:
        receive(busy), receive(waiting)
        start(busy, chunks=None)
        assert receive(busy)[0] == "started"
        start(waiting, chunks=1)
        assert receive(waiting)[1] == {"type": "queued", "position": 1}
        kind, error, _ = receive(waiting)
        assert kind == "error" and error["message"] == (f"waited {TIMEOUT:g} s in the queue for this device "
                                                        "(--queue-timeout) while other tabs generated; try again "
                                                        "later")
        assert state.queue.waiting == 0
        busy.send_json({"type": "stop"})
        assert receive_until(busy, "done")[0]["reason"] == "stopped"
        assert wait_for(lambda: not state.queue.busy)
        start(waiting, chunks=1)  # the page that gave up can generate now
        assert receive(waiting)[0] == "started"
        source.allow(1)
        assert receive_until(waiting, "done")[0]["reason"] == "finished"


def test_every_switch_is_answered_its_rate_bounded_and_what_the_command_line_refuses_is_refused():
    """A switch got no reply; 1000 switches in 0.07 s were accepted. Now each gets 'switched' (at chunk N) or an
    error; a page may ask for SWITCH_BURST at once, then SWITCH_RATE a second, with at most MAX_PENDING_SWITCHES
    waiting; a chunk already being made, or one that has a switch, is refused as the command line refuses it."""
    source = PacedSource()
    app = create_app({"text": FakeModel("text", prompts=True)}, source=source)  # no chunk limit: every 'at' is ahead
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        receive(ws)
        ws.send_json({"type": "start", "model": "text", "prompt": "a red circle"})
        assert receive(ws)[0] == "started" and wait_for(lambda: source.switches is not None)
        source.switches(0)  # the source takes the switches before chunk 0: it is being made from now on
        ws.send_json({"type": "switch", "prompt": "a blue square", "at": 0})
        assert receive(ws)[1]["message"].startswith("at=0: chunk 0 is already made (or being made)")
        replies = []
        for at in range(1, 1001):
            ws.send_json({"type": "switch", "prompt": "a blue square", "at": at})
            replies.append(receive(ws)[1])
        accepted = [r["at"] for r in replies if r["type"] == "switched"]
        assert accepted == list(range(1, 1 + MAX_PENDING_SWITCHES))  # (the burst is as large)
        refusals = {r["message"].split(";")[0] for r in replies if r["type"] == "error"}
        assert refusals <= {f"{MAX_PENDING_SWITCHES} switches already wait for their chunks (1, 2, 3, 4)",
                            f"too many switches: at most {SWITCH_BURST} at once, then {SWITCH_RATE:g} a second"}
        assert len(replies) == 1000 and source.finished == 0  # every message answered, no chunk made meanwhile
        ws.send_json({"type": "stop"})
        assert receive_until(ws, "done")[0]["reason"] == "stopped"


def test_run_control_bounds_the_rate_of_switches():
    now = [0.0]
    control = RunControl(clock=lambda: now[0])
    ask = lambda at: control.request_switch(SwitchMessage(type="switch", prompt="a", at=at), None)  # noqa: E731
    assert [ask(at) for at in range(SWITCH_BURST)] == list(range(SWITCH_BURST))
    control.take_switches(SWITCH_BURST)  # they applied: none waits
    with pytest.raises(ProtocolError, match="too many switches"):
        ask(10)
    now[0] += 1 / SWITCH_RATE
    assert ask(10) == 10
    with pytest.raises(ProtocolError, match="chunk 10 already has a switch"):
        now[0] += 10
        ask(10)
