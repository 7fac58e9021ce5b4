"""One generation per device at a time; the others wait in a bounded first-come queue and are told their place."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

Notify = Callable[[int], Awaitable[None]]  # told the waiter's position (1 = next) whenever it changes


class QueueFull(RuntimeError):
    """The queue already holds ``--max-queue`` waiting generations (or a waiter gave up: :class:`QueueTimeout`)."""


class QueueTimeout(QueueFull):
    """A generation waited longer than the queue's time-out for the device."""


class DeviceQueue:
    """``await queue.acquire(notify)`` waits for the device; ``queue.release()`` hands it on."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.busy = False
        self._waiting: list[tuple[asyncio.Future, Notify]] = []

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, notify: Notify, timeout: float | None = None) -> None:
        """Take the device, waiting in line if it is busy; QueueFull if the line is full, QueueTimeout after
        ``timeout`` seconds in line. Cancelling the caller leaves the line."""
        if not self.busy and not self._waiting:
            self.busy = True
            return
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull(f"the queue is full: {len(self._waiting)} generation(s) are waiting for this device "
                            f"(--max-queue {self.max_waiting}); try again when one has finished")
        entry = (asyncio.get_running_loop().create_future(), notify)
        self._waiting.append(entry)
        await notify(len(self._waiting))
        try:
            await asyncio.wait_for(asyncio.shield(entry[0]), timeout)
        except (asyncio.CancelledError, asyncio.TimeoutError) as e:
            if entry in self._waiting:
                self._waiting.remove(entry)
                await self._tell_positions()
            elif entry[0].done() and not entry[0].cancelled():
                self.release()  # handed the device just as it left: pass it on
            if isinstance(e, asyncio.TimeoutError):
                raise QueueTimeout(f"waited {timeout:g} s in the queue for this device (--queue-timeout) while "
                                   "other tabs generated; try again later") from None
            raise

    def release(self) -> None:
        """Hand the device to the first waiter, or mark it free."""
        while self._waiting:
            future, _ = self._waiting.pop(0)
            if not future.done():
                future.set_result(None)
                asyncio.get_running_loop().create_task(self._tell_positions())
                return
        self.busy = False

    async def _tell_positions(self) -> None:
        for position, (_, notify) in enumerate(list(self._waiting), 1):
            await notify(position)
