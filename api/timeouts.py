"""uvicorn's HTTP protocol with a read timeout: a slow or half-sent request is closed.

uvicorn closes an *idle* keep-alive connection after ``timeout_keep_alive``, but
waits for ever on a connection that has started a request and stalls (a client
that sends half its headers, or a body one byte a minute): each such connection
holds memory and a slot, and enough of them exhaust the server (slowloris). Here:

* a request's headers must all arrive within ``request_read_timeout_s`` of the
  connection opening or the previous response finishing (not reset per byte, so
  trickling bytes does not help);
* while a body is read, no gap between its chunks may exceed that timeout;
* while the application works on a complete request there is no timer.

A connection that misses either is closed. Both of uvicorn's protocols get the same
deadlines: httptools' (its C parser; about half the API's CPU per request, which the
load test's p95 depends on) where installed, h11's otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class _ReadDeadline:
    """The timer both protocols share: armed while a request's bytes are awaited."""

    #: Set by ``actsearch serve``; None reads ``ACTSEARCH_HTTP__REQUEST_READ_TIMEOUT_S``
    #: (uvicorn's worker processes import this module afresh).
    read_timeout_s: ClassVar[float | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    @classmethod
    def _timeout(cls) -> float:
        if cls.read_timeout_s is None:
            from core.settings import get_settings

            cls.read_timeout_s = get_settings().http.request_read_timeout_s
        return cls.read_timeout_s

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self._timeout(), self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()  # the next request's headers have the same deadline


class TimedH11Protocol(_ReadDeadline, H11Protocol):
    """:class:`H11Protocol` plus the read deadlines described in the module docstring."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm()  # a body: the gap between chunks is what is timed
        elif state is not h11.IDLE:
            self._disarm()  # the request is complete (or the connection is done)
        # IDLE: the headers are not complete yet; the deadline set earlier stands


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

if HttpToolsProtocol is not None:
    class TimedHttpToolsProtocol(_ReadDeadline, HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """:class:`HttpToolsProtocol` plus the same read deadlines."""

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm()  # a body may follow: the gap until its next chunk is timed

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()  # the application works without a timer
            super().on_message_complete()


def timed_protocol() -> type:
    """The protocol class ``actsearch serve`` runs: httptools' where installed."""
    return TimedHttpToolsProtocol if HttpToolsProtocol is not None else TimedH11Protocol
