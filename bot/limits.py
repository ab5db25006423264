"""Per-user limits: N reviews per moving minute (counted in Redis, so a restart or a second bot
process does not reset anyone's budget) and one review in flight at a time (this process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.feedback import hash_user
from shared.ratelimit import AsyncLimiter

#: A user over the limit hears about it at most this often (a flood gets one reply, not 1,000).
NOTICE_EVERY_S = 10.0
#: Users remembered for the in-flight flag and the notice throttle (oldest forgotten first).
REMEMBERED = 100_000


@dataclass
class Decision:
    """Whether a review may go ahead, and if not why and whether to say so."""

    allowed: bool
    reason: str = ""  # "rate" or "in_flight" when refused
    retry_in: float = 0.0
    notify: bool = True  # whether to answer the refusal (False: already told recently)


class UserLimits:
    """Decides, per user, whether a review may be analysed now (single event loop: no locks)."""

    def __init__(
        self, limiter: AsyncLimiter, per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limiter, self.per_minute, self.clock = limiter, per_minute, clock
        self._in_flight: set[int] = set()
        self._last_notice: dict[int, float] = {}

    async def acquire(self, user_id: int) -> Decision:
        """Admit one review for ``user_id`` now, or refuse it (rate or in flight)."""
        if user_id in self._in_flight:
            return self._refuse(user_id, "in_flight", 0.0)
        verdict = await self.limiter.hit("bot", hash_user(f"tg:{user_id}"), self.per_minute)
        if not verdict.allowed:
            return self._refuse(user_id, "rate", float(verdict.retry_after))
        self._in_flight.add(user_id)
        return Decision(True)

    def release(self, user_id: int) -> None:
        """The user's review in flight has been answered."""
        self._in_flight.discard(user_id)

    def _refuse(self, user_id: int, reason: str, retry_in: float) -> Decision:
        now = self.clock()
        notify = now - self._last_notice.get(user_id, float("-inf")) >= NOTICE_EVERY_S
        if notify:
            self._last_notice.pop(user_id, None)
            self._last_notice[user_id] = now
            while len(self._last_notice) > REMEMBERED:
                self._last_notice.pop(next(iter(self._last_notice)))
        return Decision(False, reason, retry_in, notify)
