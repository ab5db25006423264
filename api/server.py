"""uvicorn as the API runs it: a cap on open connections and a deadline for request headers.

uvicorn bounds neither: a client trickling a request line byte by byte keeps its connection (and
a slot of the process) forever, and a flood of idle connections is only limited by file
descriptors.  ``GuardedH11Protocol`` (passed as uvicorn's ``http`` protocol class) closes a
connection whose request headers are not complete within ``HEADER_TIMEOUT_S`` of its opening or
of the previous response, and refuses connections beyond ``MAX_CONNECTIONS`` at once.  Slow
*bodies* are cut by the ASGI side (``api.guard``: an idle and a total deadline per request).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger(__name__)

#: Seconds a connection may take to send a complete request line and headers.
HEADER_TIMEOUT_S = 10.0
#: Connections open at once; beyond, new ones are closed at once.
MAX_CONNECTIONS = 1000


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection_refused", reason="too many connections")
            transport.close()
            return
        self._arm_header_deadline()

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
