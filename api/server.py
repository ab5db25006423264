"""uvicorn as the API runs it: httptools, a cap on open connections, a size and a deadline for
request headers.

The protocol is uvicorn's httptools one (llhttp, in C): on the 2-core host uvicorn's pure-Python
h11 protocol spent about a quarter of the API's CPU on a one-review request (issue 25's
profile), and a chat-sized request is what the API serves most.

uvicorn bounds none of the following itself: a client trickling a request line byte by byte
keeps its connection (and a slot of the process) forever, a flood of idle connections is only
limited by file descriptors, and llhttp reads headers of any size.  ``GuardedProtocol``
(passed as uvicorn's ``http`` protocol class):

- closes a connection whose request headers are not complete within ``HEADER_TIMEOUT_S`` of
  its opening or of the previous response;
- answers 431 and closes a connection whose request line and headers pass
  ``MAX_HEADER_BYTES`` before they are complete;
- refuses connections beyond ``MAX_CONNECTIONS`` at once.

Slow *bodies* are cut by the ASGI side (``api.guard``: an idle and a total deadline per request).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

#: Seconds a connection may take to send a complete request line and headers.
HEADER_TIMEOUT_S = 10.0
#: Connections open at once; beyond, new ones are closed at once.
MAX_CONNECTIONS = 1000
#: Bytes of request line and headers at most.
MAX_HEADER_BYTES = 16 * 1024

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 31\r\nconnection: close\r\n\r\n"
    b"Request headers are too large.\n"
)


async def _headers_too_large(scope: Any, receive: Any, send: Any) -> None:
    """The answer to a request whose headers, complete, are over ``MAX_HEADER_BYTES``."""
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b"Request headers are too large.\n"})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size cap and a
    connection cap."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    max_header_bytes: int = MAX_HEADER_BYTES
    _header_deadline: asyncio.TimerHandle | None = None
    #: Bytes received since the current request's headers began (None: headers are complete).
    _header_bytes: int | None = 0
    #: The request whose headers just completed is over the size cap.
    _refuse = False
    #: Bytes of the chunk being parsed.
    _chunk = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection_refused", reason="too many connections")
            transport.close()
            return
        self._header_bytes = 0
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        self._chunk = len(data)
        if self._header_bytes is not None:
            self._header_bytes += len(data)
        super().data_received(data)
        # Still no complete headers after all that was read: refuse before reading more.
        if self._header_bytes is not None and self._header_bytes > self.max_header_bytes:
            self._refuse_large_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A new request's headers begin in this chunk (counted whole: at most one read of the
        # request before it too).  Not at a response's end: the body of a request answered
        # before it was read may still be arriving, and it is not headers.
        self._header_bytes = self._chunk

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        self._refuse = size > self.max_header_bytes  # they all came at once
        super().on_headers_complete()
        if self._refuse:  # queued behind a request still running: answered 431 in its turn
            self._refuse = False
            cycle, _ = self.pipeline[0]
            cycle.keep_alive = False
            self.pipeline[0] = (cycle, _headers_too_large)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._refuse:  # the request runs its course (its body is read), answered 431
            self._refuse = False
            log.info("request_refused", reason="request headers too large")
            cycle.keep_alive = False
            app = _headers_too_large
        super()._start_asgi_task(cycle, app)

    def _refuse_large_headers(self) -> None:
        if not self.transport.is_closing():
            log.info("connection_closed", reason="request headers too large")
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        waiting_for: Any = self.cycle  # a new request replaces the cycle
        self._header_deadline = self.loop.call_later(
            self.header_timeout_s, self._header_deadline_passed, waiting_for
        )

    def _disarm_header_deadline(self) -> None:
        handle = getattr(self, "_header_deadline", None)
        if handle is not None:
            handle.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self, waiting_for: Any) -> None:
        self._header_deadline = None
        if self.cycle is waiting_for and not self.transport.is_closing():
            log.info("connection_closed", reason="request headers not complete in time")
            self.transport.close()
