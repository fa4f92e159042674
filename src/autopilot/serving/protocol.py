"""The serving endpoint's HTTP protocol: uvicorn's httptools protocol, with deadlines and a fast path for refusals.

Imported only through `serving.server.http_protocol`, which falls back to uvicorn's default
protocol where httptools is not installed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ServingProtocol"]


class ServingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, a body deadline and refusals from the headers.

    `serving.server.http_protocol` configures it: a subclass sets the class attributes below.
    """

    header_timeout: float = 5.0  # seconds from a connection's opening, or a request's first byte, to its headers
    body_timeout: float | None = None  # the app's body deadline; None: no deadline on unread bodies
    admission: Any = None  # the app's `serving.admission.Admission`; None: refusals go through the app
    timeout_answer: bytes = b""  # the whole 408 sent when the head deadline passes
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _crowded = False  # opened past max_connections: its requests are refused and it is closed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head deadline; note whether the connection is past the bound."""
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)
        self._crowded = self.admission is not None and self.admission.over_connection_bound(len(self.connections))

    def on_message_begin(self) -> None:
        """A request's first byte: its head deadline starts (unless the connection's still runs)."""
        super().on_message_begin()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)

    def on_headers_complete(self) -> None:
        """The head arrived in time: stop its deadline, start the one on an unread body."""
        self._disarm()
        super().on_headers_complete()
        if self.body_timeout is not None:  # cleared by on_message_complete, at once for a request without body
            self._body_timer = self.loop.call_later(self.body_timeout + 1.0, self._body_overdue)

    def on_message_complete(self) -> None:
        """The whole body arrived: stop its deadline."""
        self._disarm_body()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop both deadlines; publish the open connections (in a worker pool)."""
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)
        if self.admission is not None:
            self.admission.connections_now(len(self.connections))

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_overdue(self) -> None:
        # The app answers a body it reads too slowly with 408 at the body deadline; this is the
        # rest: bodies of requests already answered (or never read), still trickling in.
        self._body_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(self.timeout_answer)
            self.transport.close()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        path = cycle.scope["path"]
        admission = self.admission
        refusal = None
        if admission is not None and app is self.app:
            refusal = admission.connection_refusal(path) if self._crowded else admission.refusal(path)
        if refusal is None:
            super()._start_asgi_task(cycle, app)
            return
        # What uvicorn's own response cycle does once an answer is complete: the rest of the
        # request's body, if any, is then read and dropped, and keep-alive goes on.
        cycle.response_started = cycle.response_complete = True
        self.transport.write(self._with_default_headers(admission.answer(path, refusal)[2]))
        if refusal.close or not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _with_default_headers(self, raw: bytes) -> bytes:
        defaults = self.server_state.default_headers  # Date (refreshed every second) and the like
        if not defaults:
            return raw
        line_end = raw.index(b"\r\n") + 2
        return raw[:line_end] + b"".join(b"%s: %s\r\n" % pair for pair in defaults) + raw[line_end:]
