"""Stopping on a signal: a signal becomes a request (:class:`StopSignals`) that a loop polls at safe points; a
generation then raises :class:`Stopped` carrying what was kept, a training run saves a checkpoint first
(:mod:`ca2vdm.training.run_guard`)."""
from __future__ import annotations

import signal

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what stops a generation (Ctrl-C, a polite kill)


class Stopped(KeyboardInterrupt):
    """A generation was stopped by ``signum``. ``stats`` describes the finished chunks, kept as a playable mp4
    (``stats["video"]``), or is None when it stopped before the first chunk was finished (nothing written)."""

    def __init__(self, signum: int, stats: dict | list | None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stats = signum, stats


class StopSignals:
    """``with StopSignals(signals) as stop``: the signals request a stop instead of ending the process at once.

    A loop polls :meth:`check` (or reads :attr:`signum`) at its safe points. Signals the process was started to
    ignore stay ignored; the old handlers come back on exit.
    """

    def __init__(self, signals: tuple[int, ...] = INTERRUPT_SIGNALS) -> None:
        self.signum: int | None = None
        self.signals = signals
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        for sig in self.signals:
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
