"""Who is calling: bearer or basic-auth tokens, compared in constant time, rate-limited.

Clients send ``Authorization: Bearer TOKEN`` or, as in the Peltarion tutorial's
``curl -u TOKEN: ...``, HTTP basic auth with the token as the user name and an empty password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, Mapping

WINDOW_S = 60.0


class Denied(Exception):
    """A request refused: HTTP status, a message for the JSON body, headers to add."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class Tokens:
    """The configured tokens; ``check`` answers the name of the one presented."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        # Compare digests: equal length, and every configured token is compared every time,
        # so neither a token's length nor which token matched shows in the timing.
        self._digests = [(name, _digest(token)) for name, token in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> str:
        """The calling token's name; Denied (401 no credentials, 403 wrong ones) otherwise."""
        presented = credential(authorization)
        if presented is None:
            raise Denied(
                401,
                "authentication required: send 'Authorization: Bearer TOKEN' (or curl -u TOKEN:)",
                (("WWW-Authenticate", 'Bearer realm="sentiment"'),),
            )
        digest = _digest(presented)
        found = None
        for name, known in self._digests:
            if hmac.compare_digest(digest, known) and found is None:
                found = name
        if found is None:
            raise Denied(403, "this token is not valid (revoked or mistyped?)")
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def credential(authorization: str | None) -> str | None:
    """The token in an Authorization header (Bearer, or Basic with the token as user name)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return user or password or None  # `-u TOKEN:` (or `-u :TOKEN`)
    return None


class RateLimiter:
    """``per_minute`` requests per token over a sliding minute (one event loop: no locks)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._times: dict[str, deque[float]] = {}

    def acquire(self, name: str) -> None:
        """Count one request for ``name``, or raise Denied(429) with Retry-After."""
        now = self.clock()
        times = self._times.setdefault(name, deque())
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        if len(times) >= self.per_minute:
            retry = max(1, int(WINDOW_S - (now - times[0])) + 1)
            raise Denied(
                429,
                f"rate limit: {self.per_minute} requests per minute; retry in {retry} s",
                (("Retry-After", str(retry)),),
            )
        times.append(now)
