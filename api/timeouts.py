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

A connection that misses either is closed. (uvicorn is run with ``http="h11"``
behaviour; this subclasses its h11 protocol, the one installed.)
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    """:class:`H11Protocol` plus the read deadlines described in the module docstring."""

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

            cls.read_timeout_s = get_settings().http.request_read_timeout_s or 30.0
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
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm()  # a body: the gap between chunks is what is timed
        elif state is not h11.IDLE:
            self._disarm()  # the request is complete (or the connection is done)
        # IDLE: the headers are not complete yet; the deadline set earlier stands

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers have the same deadline
