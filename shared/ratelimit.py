"""Rate limits that hold across processes and replicas: a moving window per key, kept in Redis.

Every limit of the system goes through here (API requests per token, votes per voter, reviews
per Telegram user), so two API replicas or a restarted bot count the same budget.  The counting
is the ``limits`` library's moving window (a Lua script over one list per key: exact, no burst
at window edges) rather than a hand-written one; keys live under ``sentiment:limits``.

Timestamps are the caller's clock (the library's choice): replicas must keep their clocks in
sync (NTP), as every Redis-backed limiter assumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

KEY_PREFIX = "sentiment:limits"


@dataclass(frozen=True)
class Verdict:
    """Whether one more event is allowed now, and if not, in how many seconds to retry."""

    allowed: bool
    retry_after: int = 0


def _item(per_minute: int) -> RateLimitItemPerMinute:
    return RateLimitItemPerMinute(per_minute)


def _retry(reset_time: float) -> int:
    return max(1, math.ceil(reset_time - time.time()))


class Limiter:
    """Moving-window limits on a synchronous Redis client (its connection pool is shared)."""

    def __init__(self, conn: Any) -> None:
        storage = RedisStorage(
            "redis://", connection_pool=conn.connection_pool, key_prefix=KEY_PREFIX
        )
        self._strategy = MovingWindowRateLimiter(storage)

    def hit(self, scope: str, key: str, per_minute: int) -> Verdict:
        """Count one event of ``key`` in ``scope`` unless it would exceed ``per_minute``."""
        item = _item(per_minute)
        if self._strategy.hit(item, scope, key):
            return Verdict(True)
        return Verdict(False, _retry(self._strategy.get_window_stats(item, scope, key).reset_time))


class AsyncLimiter:
    """The same limits from an event loop (``redis.asyncio``: no thread per check)."""

    def __init__(self, aconn: Any) -> None:
        storage = AsyncRedisStorage(
            "async+redis://",
            implementation="redispy",
            connection_pool=aconn.connection_pool,
            key_prefix=KEY_PREFIX,
        )
        self._strategy = AsyncMovingWindow(storage)

    async def hit(self, scope: str, key: str, per_minute: int) -> Verdict:
        item = _item(per_minute)
        if await self._strategy.hit(item, scope, key):
            return Verdict(True)
        stats = await self._strategy.get_window_stats(item, scope, key)
        return Verdict(False, _retry(stats.reset_time))
