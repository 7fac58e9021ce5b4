"""Arbitrary JSON at every field of every client message (hypothesis): each message gets at most one reply (a start
exactly one: ``started`` or ``error``; a switch, sent while a text model's generation runs, none or an ``error``), the
socket stays open, the page can generate afterwards, and the server logs no traceback. Examples are bounded
(``FUZZ_EXAMPLES``, default 300) and derandomized so CI is repeatable; set ``CA2VDM_FUZZ_EXAMPLES=5000`` to search
longer."""
import json
import logging
import os

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca2vdm.config import STEP_CACHES
from ca2vdm.serve import create_app

from serve_helpers import FakeModel, PacedSource, receive, receive_until, start, wait_for

FUZZ_EXAMPLES = int(os.environ.get("CA2VDM_FUZZ_EXAMPLES", "300"))
PROBE = '{"type": "probe"}'  # always refused: its reply marks the end of the replies to the message before it
# JSON texts Python's json module cannot write (or writes as non-standard JSON), sent as they are
RAW = ["9" * 5000, "-" + "9" * 5000, "NaN", "Infinity", "-Infinity", "1e400", "-0", "1e-400", "[" * 300 + "]" * 300,
       '"' + "9" * 5000 + '"', '"\u00b2"', '"\u0663"', '" 7 "', "1.0", "3.000000000000001", "18446744073709551616"]
SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False)
           | st.text(max_size=12) | st.sampled_from(["fake", "plain", "text", "none", "teacache", "start", "shown",
                                                      "stop", "switch", "recache", "keep", "reset", "a red circle",
                                                      " "]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3), max_leaves=8)
FRAGMENTS = VALUES.map(json.dumps) | st.sampled_from(RAW)
START_FIELDS = ["type", "model", "label", "seed", "chunks", "step_cache", "step_cache_options", "first_frame",
                "prompt", "switch_mode", "x"]
TEXT_FIELDS = ["prompt", "label", "switch_mode"]  # a start of the text model
SWITCH_FIELDS = ["type", "prompt", "label", "at", "x"]
SETTINGS = [(policy, name) for policy, config in STEP_CACHES.items() for name in config().options()]


@st.composite
def messages(draw) -> tuple[str, str]:
    """(kind, text): a start (of a label or a text model), switch, shown or stop message with one field set to an
    arbitrary JSON value."""
    kind = draw(st.sampled_from(["start", "shown", "stop", "option", "text", "switch"]))
    value = draw(FRAGMENTS)
    if kind == "option":  # a value for one of a step cache's settings
        policy, name = draw(st.sampled_from(SETTINGS))
        return "start", (f'{{"type": "start", "model": "fake", "chunks": 1, "step_cache": "{policy}", '
                         f'"step_cache_options": {{"{name}": {value}}}}}')
    if kind in ("start", "text", "switch"):
        field = draw(st.sampled_from({"start": START_FIELDS, "text": TEXT_FIELDS, "switch": SWITCH_FIELDS}[kind]))
        base = {"start": {"type": "start", "model": "fake", "chunks": 1},
                "text": {"type": "start", "model": "text", "chunks": 1, "prompt": "a red circle"},
                "switch": {"type": "switch", "prompt": "a blue square"}}[kind]
        head = json.dumps({k: v for k, v in base.items() if k != field})[:-1]
        return "switch" if kind == "switch" else "start", f'{head}, "{field}": {value}}}'
    field = draw(st.sampled_from(["frames", "type", "x"] if kind == "shown" else ["type", "x"]))
    return kind, f'{{"type": "{kind}", "frames": 3, "{field}": {value}}}' if field != "frames" else \
        f'{{"type": "shown", "frames": {value}}}'


def test_arbitrary_json_at_every_field_gets_one_reply_and_the_page_goes_on(caplog):
    source = PacedSource()
    app = create_app({"fake": FakeModel(), "plain": FakeModel("plain", labels=[]),
                      "text": FakeModel("text", prompts=True)}, max_chunks=50, source=source)
    state = app.state.serve
    caplog.set_level(logging.WARNING)
    seen = {"started": 0, "switched": 0, "error": 0, "no reply": 0}
    switches = {"queued": 0, "refused": 0}  # switches to a running generation: accepted ("switched") or one error
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert receive(ws)[0] == "hello"

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(messages())
        def one_message(message):
            kind, text = message
            if kind == "switch":  # a switch changes a running generation
                ws.send_json({"type": "start", "model": "text", "prompt": "a red circle", "chunks": 3})
                assert receive(ws)[0] == "started"
            ws.send_text(text)
            ws.send_text(PROBE)
            replies = []
            while (reply := receive(ws))[0] != "error" or "unknown type \"probe\"" not in reply[1]["message"]:
                replies.append(reply)
            assert len(replies) <= 1, (text[:200], replies)
            seen[replies[0][0] if replies else "no reply"] += 1
            if kind == "switch":  # every switch is answered
                assert len(replies) == 1, (text[:200], replies)
                switches["queued" if replies[0][0] == "switched" else "refused"] += 1
            if kind == "start":  # a start always gets its answer
                assert len(replies) == 1 and replies[0][0] in ("started", "error"), (text[:200], replies)
            if replies and replies[0][0] not in ("started", "switched"):
                assert replies[0][0] == "error" and replies[0][1]["message"], (text[:200], replies)
            if replies and replies[0][0] == "started" or kind == "switch":  # a running generation: stop it again
                ws.send_json({"type": "stop"})
                assert receive_until(ws, "done")[0]["reason"] in ("stopped", "finished")
                assert wait_for(lambda: not state.queue.busy)

        one_message()
        assert min(seen.values()) > 0 and sum(seen.values()) >= FUZZ_EXAMPLES, seen  # every outcome was tried
        assert min(switches.values()) > 0, switches
        start(ws, chunks=1)  # the page can still generate
        assert receive(ws)[0] == "started"
        source.allow(1)
        assert receive_until(ws, "done")[0]["reason"] == "finished"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks[0].getMessage()
