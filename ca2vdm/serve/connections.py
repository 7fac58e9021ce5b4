"""Connections that cannot hold the server: a client that sends half an HTTP header and waits (slowloris) is cut off.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) but not a request whose headers never end: its
HTTP protocol cancels that timer on every byte received. :class:`HeaderTimeoutProtocol` (uvicorn's h11 protocol)
also closes a connection whose request headers are not complete ``header_timeout`` seconds after it opened, or after
its previous response ended; once the headers are in, the request (or the WebSocket it upgrades to, which no longer
goes through this protocol) runs as long as it needs. :func:`server_config` sets it, the keep-alive time-out and a
limit on concurrent connections (uvicorn answers 503 beyond it).
"""
from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0  # seconds a request may take to send its headers
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection stays open (uvicorn's default, set explicitly)
MAX_CONNECTIONS = 256  # concurrent connections and WebSockets; beyond: 503 Service Unavailable


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (``header_timeout``, a class attribute)."""
    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.transport.get_protocol() is not self:
            self._headers_in()  # a request (or a WebSocket upgrade, handed to its own protocol) has begun

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_headers()  # the next request of a keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._headers_in()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_in(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app, header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                  **options) -> uvicorn.Config:
    """uvicorn's config for ``app`` with the bounds above (``options``: uvicorn's other settings)."""
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
    return uvicorn.Config(app, http=protocol, timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
                          limit_concurrency=max_connections, **options)
