"""The API's outermost layer: every refusal that must cost nothing happens here, before the
application reads a single body byte.

For ``/v1/*``: the token (401/403), then the token's rate (429, counted in Redis so every replica
shares one budget).  For every request: the body size (413, announced or streamed), an idle
deadline between body chunks and a total deadline for the body (408), so a client that trickles
its body cannot hold a request open.  Metrics and the access log are written here too, so refused
requests are counted like the others, with labels from closed sets only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.auth import Denied, Tokens
from api.errors import error_response
from shared.ratelimit import AsyncLimiter

log = structlog.get_logger(__name__)

#: Paths under this prefix need a token.
PROTECTED = "/v1/"
#: The upload route (its own, larger, body limit).
UPLOAD_PATH = "/v1/batches"


@dataclass(frozen=True)
class BodyRules:
    """How much a request body may hold and how slowly it may arrive."""

    max_bytes: int
    max_upload_bytes: int
    idle_s: float = 30.0
    total_s: float = 300.0


class _BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Guard:
    """ASGI middleware: auth, rate, body limits and deadlines, then metrics and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: Tokens,
        limiter: Callable[[], AsyncLimiter | None],
        rate_per_minute: int,
        body: BodyRules,
    ) -> None:
        self.app, self.tokens, self.limiter = app, tokens, limiter
        self.rate_per_minute, self.body = rate_per_minute, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = await self._admit(scope)
        if refusal is not None:
            await refusal(scope, receive, tracking_send)
        else:
            await self._run(scope, receive, tracking_send)
        self._observe(scope, status["code"], time.perf_counter() - started)

    async def _admit(self, scope: Scope) -> Any:
        """The refusal to send instead of running the app, or None."""
        if not scope["path"].startswith(PROTECTED):
            return None
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization")
        try:
            name = (
                self.tokens.check(raw.decode("latin-1") if raw else None)
                if self.tokens
                else "local"
            )
        except Denied as exc:
            return error_response(exc.status, exc.message, dict(exc.headers))
        scope["caller"] = name
        limiter = self.limiter()
        if limiter is not None:
            verdict = await limiter.hit("api", name, self.rate_per_minute)
            if not verdict.allowed:
                metrics.RATE_LIMITED.labels(name).inc()
                return error_response(
                    429,
                    f"rate limit: {self.rate_per_minute} requests per minute; "
                    f"retry in {verdict.retry_after} s",
                    {"Retry-After": str(verdict.retry_after)},
                )
        return None

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        rules = self.body
        limit = rules.max_upload_bytes if scope["path"] == UPLOAD_PATH else rules.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(413, f"request body over the limit of {limit:,} bytes")(
                scope, receive, send
            )
            return
        seen = 0
        complete = False
        deadline = time.monotonic() + rules.total_s
        started = False

        async def guarded_receive() -> Message:
            nonlocal seen, complete
            if complete:  # the body is in: what follows is the disconnect wait, unbounded
                return await receive()
            wait = min(rules.idle_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, wait))
            except TimeoutError:
                raise _BodyRefused(408, "the request body arrived too slowly") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyRefused(413, f"request body over the limit of {limit:,} bytes")
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except _BodyRefused as exc:
            if not started:
                await error_response(exc.status, exc.message, {"Connection": "close"})(
                    scope, receive, send
                )

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        endpoint = _endpoint(scope)
        metrics.observe_request(scope["method"], endpoint, status, elapsed)
        log.info(
            "http_request",
            method=metrics.method_label(scope["method"]),
            endpoint=endpoint,
            status=status,
            caller=scope.get("caller"),
            latency_ms=round(1000 * elapsed, 1),
        )


def _endpoint(scope: Scope) -> str:
    """The route's path template (a closed set), or ``unmatched``."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            match, _ = candidate.matches(scope)
            if match == Match.FULL:
                route = candidate
                break
    return str(getattr(route, "path", "unmatched"))
