"""One generation on the worker thread: pull chunks while the page keeps up, write them to the mp4, hand them on.

The thread and the WebSocket's event loop share only a :class:`RunControl` (stop, frames shown, switches) and the
``emit`` callback; a stop is seen after the current denoising step, so no further chunk is computed.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ca2vdm.io.video import VideoWriter
from ca2vdm.serve.frames import PixelChunk
from ca2vdm.serve.protocol import LEAD_FRAMES, MAX_PENDING_SWITCHES, SWITCH_BURST, SWITCH_RATE, ProtocolError


class Cancelled(Exception):
    """The page pressed Stop or went away."""


class Stalled(Cancelled):
    """The page showed no new frame for ``ack_timeout`` seconds while the generation waited for it."""


class RunControl:
    """Stop requests and the page's progress, shared between the event loop and the worker thread.

    ``shown`` never exceeds the frames sent (a page cannot have shown more), so no message switches the lead bound
    off; a page that acknowledges nothing for ``ack_timeout`` seconds while the generation waits for it is dropped
    (:class:`Stalled`), so a hidden tab or a client that never answers cannot hold the device.
    """

    def __init__(self, lead_frames: int = LEAD_FRAMES, ack_timeout: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.lead_frames, self.ack_timeout, self.clock = lead_frames, ack_timeout, clock
        self._changed = threading.Condition()
        self.stopped = False
        self.shown = 0
        self.sent = 0
        self._last_ack = time.monotonic()
        self._switches: list = []  # protocol.SwitchMessage with its chunk, in the order they came
        self._switched: set[int] = set()  # chunks a switch was asked for (one per chunk, as on the command line)
        self.fixed = 0  # chunks whose condition is decided (being made or made): a switch must come at or after
        self._allowance, self._refilled = float(SWITCH_BURST), clock()  # switches a page may still ask for now

    def stop(self) -> None:
        with self._changed:
            self.stopped = True
            self._changed.notify_all()

    def mark_sent(self, frames: int) -> None:
        """The page has been sent ``frames`` frames in all (before they go out)."""
        with self._changed:
            self.sent = frames

    def set_shown(self, frames: int) -> None:
        with self._changed:
            frames = min(frames, self.sent)
            if frames > self.shown:
                self.shown, self._last_ack = frames, time.monotonic()
            self._changed.notify_all()

    def request_switch(self, switch, last_chunk: int | None) -> int:
        """Queue a switch (a new prompt or label from chunk ``switch.at``, None: the next chunk started) for the
        worker, which schedules it on the generation's stream between chunks; return the chunk it applies at.
        ProtocolError if that chunk is already decided (being made, or made), past ``last_chunk`` (None: no end) or
        already has a switch, as the command line refuses them; and when the page asks for too many: more than
        ``MAX_PENDING_SWITCHES`` waiting for their chunks, or faster than ``SWITCH_RATE`` a second (after a burst of
        ``SWITCH_BURST``)."""
        with self._changed:
            now = self.clock()
            self._allowance = min(SWITCH_BURST, self._allowance + (now - self._refilled) * SWITCH_RATE)
            self._refilled = now
            if self._allowance < 1:
                raise ProtocolError(f"too many switches: at most {SWITCH_BURST} at once, then {SWITCH_RATE:g} a "
                                    "second; wait a moment and switch again")
            waiting = sorted(at for at in self._switched if at >= self.fixed)
            if len(waiting) >= MAX_PENDING_SWITCHES:
                chunks = ", ".join(map(str, waiting))
                raise ProtocolError(f"{len(waiting)} switches already wait for their chunks ({chunks}); switch again "
                                    "once one of them has applied")
            at = self.fixed if switch.at is None else switch.at
            if last_chunk is not None and at > last_chunk:
                raise ProtocolError(f"at={at}: past the last chunk of this generation ({last_chunk}); no chunk is left "
                                    "for a switch to change")
            if at < self.fixed:
                raise ProtocolError(f"at={at}: chunk {at} is already made (or being made); the first chunk a switch "
                                    f"can still change is {self.fixed}: switch there or later")
            if at in self._switched:
                raise ProtocolError(f"at={at}: chunk {at} already has a switch; give one per chunk")
            self._switched.add(at)
            self._switches.append(switch.model_copy(update={"at": at}))
            self._allowance -= 1
        return at

    def take_switches(self, next_chunk: int) -> list:
        """The switches asked for since the last call, taken before chunk ``next_chunk`` is made (from then on a
        switch needs a later chunk)."""
        with self._changed:
            taken, self._switches = self._switches, []
            self.fixed = max(self.fixed, next_chunk + 1)
        return taken

    def poll(self) -> None:
        """Raise Cancelled if a stop was requested (called after every denoising step)."""
        if self.stopped:
            raise Cancelled

    def wait_for_page(self, sent: int) -> None:
        """Block while the page is more than ``lead_frames`` frames behind the ``sent`` frames; Cancelled on stop,
        Stalled when the page has acknowledged no frame for ``ack_timeout`` seconds of this wait."""
        began = time.monotonic()
        with self._changed:
            while not self.stopped and sent - self.shown > self.lead_frames:
                if self.ack_timeout is None:
                    self._changed.wait()
                    continue
                left = max(self._last_ack, began) + self.ack_timeout - time.monotonic()
                if left <= 0:
                    raise Stalled
                self._changed.wait(left)
        self.poll()


@dataclass
class Figures:
    """The live figures of one generation (also sent with every chunk)."""
    chunks_done: int = 0        # chunks of the model's chunk length (not the first frame or given frames)
    total_frames: int = 0       # frames sent, given ones included
    generated: int = 0          # frames the model made
    busy: float = 0.0           # seconds spent generating and encoding (not waiting for the page)
    computed: int = 0
    skipped: int = 0
    first_frame_seconds: float | None = None  # from the start of the generation to the first frame
    tic: float = field(default_factory=time.perf_counter)

    @property
    def fps(self) -> float | None:
        """Frames the model made per second of work."""
        return self.generated / self.busy if self.busy > 0 and self.generated else None


def produce(chunks: Iterator[PixelChunk], writer: VideoWriter, control: RunControl,
            emit: Callable[[dict, np.ndarray], None], figures: Figures) -> None:
    """Pull ``chunks`` one at a time, each only once the page has caught up, write it to ``writer`` and ``emit`` its
    header and frames. Raises Cancelled on a stop; the writer is left to the caller."""
    while True:
        control.wait_for_page(figures.total_frames)
        tic = time.perf_counter()
        chunk = next(chunks, None)
        if chunk is None:
            return
        model_seconds = time.perf_counter() - tic
        writer.write(chunk.pixels)
        encode_seconds = time.perf_counter() - tic - model_seconds
        figures.total_frames += len(chunk.pixels)
        if chunk.kind != "given":
            figures.generated += len(chunk.pixels)
            figures.busy += model_seconds + encode_seconds
        figures.chunks_done += chunk.kind == "chunk"
        figures.computed += chunk.computed
        figures.skipped += chunk.skipped
        if figures.first_frame_seconds is None:
            figures.first_frame_seconds = time.perf_counter() - figures.tic
        frames, height, width = chunk.pixels.shape[:3]
        control.mark_sent(figures.total_frames)
        emit({"kind": chunk.kind, "index": figures.chunks_done - 1 if chunk.kind == "chunk" else None,
              "frames": frames, "height": height, "width": width, "seconds": model_seconds,
              "encode_seconds": encode_seconds, "computed": chunk.computed, "skipped": chunk.skipped,
              "total_frames": figures.total_frames, "chunks_done": figures.chunks_done, "fps": figures.fps,
              "computed_total": figures.computed, "skipped_total": figures.skipped,
              "first_frame_seconds": figures.first_frame_seconds}, chunk.pixels)
