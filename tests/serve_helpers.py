"""Stand-ins and client helpers for the server tests: a frame source the test paces chunk by chunk."""
from __future__ import annotations

import json
import threading
import time
from itertools import count

import numpy as np

from ca2vdm.serve.frames import PixelChunk
from ca2vdm.serve.protocol import read_chunk_message

SIZE = 32  # frames of the stand-in are SIZE x SIZE (decord misreads some small widths, dmlc/decord#336)
WAIT = 30  # seconds a worker thread gets to notice a stop (a liveness bound, not a timing assertion)


class FakeModel:
    """An offered model as the page sees it (``describe``), without weights."""

    def __init__(self, name: str = "fake", labels: list[str] | None = None, prompts: bool = False):
        self.name, self.labels = name, ["circle", "square", "triangle"] if labels is None else labels
        self.prompts = prompts  # a text model: prompts instead of labels

    def describe(self) -> dict:
        return {"name": self.name, "labels": [] if self.prompts else self.labels, "size": [SIZE, SIZE], "fps": 8,
                "chunk_frames": 4, "first_frame_chunk": False, "prompts": self.prompts}


class PacedSource:
    """A frame source (the signature of ``frames.pixel_chunks``) whose chunks are released one by one by the test
    (:meth:`allow`). While waiting it polls like the pipeline does after every denoising step, so a stop abandons
    the chunk in progress. Chunk i is 4 frames filled with the value i."""

    def __init__(self):
        self._allowed = threading.Semaphore(0)
        self.started = 0            # chunks begun
        self.finished = 0           # chunks completed
        self.cancelled = threading.Event()  # set when a poll raised (the run was stopped)
        self.calls: list[dict] = []

    def allow(self, chunks: int = 1) -> None:
        for _ in range(chunks):
            self._allowed.release()

    def __call__(self, offered, *, poll, switches=None, **request):
        self.switches = switches  # the session's switch requests, taken between chunks
        given = request["first_frame"]
        self.calls.append({"model": offered.describe()["name"], **request,
                           "first_frame_existed": given is not None and given.exists()})
        for index in count() if request["chunks"] is None else range(request["chunks"]):
            self.started += 1
            try:
                while not self._allowed.acquire(timeout=0.005):
                    poll()  # a denoising step
            except BaseException:
                self.cancelled.set()
                raise
            self.finished += 1
            yield PixelChunk(np.full((4, SIZE, SIZE, 3), index, np.uint8), "chunk", computed=3, skipped=1)


def receive(ws) -> tuple[str, dict, np.ndarray | None]:
    """The next message: ("chunk", header, pixels) for a binary one, else (its type, the message, None)."""
    message = ws.receive()
    if message.get("bytes") is not None:
        header, pixels = read_chunk_message(message["bytes"])
        return "chunk", header, pixels
    data = json.loads(message["text"])
    return data["type"], data, None


def receive_until(ws, kind: str) -> tuple[dict, list[tuple[dict, np.ndarray]], list[dict]]:
    """Read messages until one of type ``kind``; return it, the chunks before it and the other messages."""
    chunks, others = [], []
    while True:
        got, message, pixels = receive(ws)
        if got == kind:
            return message, chunks, others
        if got == "chunk":
            chunks.append((message, pixels))
        else:
            others.append(message)


def start(ws, **fields) -> None:
    ws.send_json({"type": "start", "model": "fake", **fields})


def wait_for(predicate, seconds: float = WAIT) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()
