"""Stopping a generation cleanly: SIGINT and SIGTERM become a request that the loop polls between denoising steps,
so a chunk is never cut in half in the file, and :class:`Stopped` carries what was kept."""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """generate_video was stopped by ``signum``. ``stats`` describes the finished chunks, kept as a playable mp4
    (``stats["video"]``), or is None when it stopped before the first chunk was finished (nothing written)."""

    def __init__(self, signum: int, stats: dict | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stats = signum, stats


class StopSignals:
    """``with StopSignals() as stop``: SIGINT and SIGTERM request a stop instead of ending the process at once.

    ``generate_video(..., stop=stop)`` polls it after every denoising step and decoded batch, so a chunk is never cut
    in half in the file. Signals the process was started to ignore stay ignored; the old handlers come back on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            if self._previous[sig] is not signal.SIG_IGN:
                signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler or signal.SIG_DFL)  # None: a handler not set from Python

    def _request(self, signum: int, frame) -> None:
        self.signum = self.signum or signum

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.signum is not None:
            raise KeyboardInterrupt(signal.Signals(self.signum).name)
