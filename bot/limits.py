"""Per-user limits: N reviews per sliding minute and one review in flight at a time."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 60.0
#: A user over the limit hears about it at most this often (a flood gets one reply, not 1,000).
NOTICE_EVERY_S = 10.0


@dataclass
class Decision:
    """Whether a review may go ahead, and if not why and whether to say so."""

    allowed: bool
    reason: str = ""  # "rate" or "in_flight" when refused
    retry_in: float = 0.0
    notify: bool = True  # whether to answer the refusal (False: already told recently)


@dataclass
class _User:
    times: deque[float] = field(default_factory=deque)
    in_flight: bool = False
    last_notice: float = float("-inf")


class RateLimiter:
    """Decides, per user, whether a review may be analysed now (single event loop: no locks)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._users: dict[int, _User] = {}

    def acquire(self, user_id: int) -> Decision:
        """Admit one review for ``user_id`` now, or refuse it (rate or in flight)."""
        now = self.clock()
        user = self._users.setdefault(user_id, _User())
        while user.times and now - user.times[0] >= WINDOW_S:
            user.times.popleft()
        if user.in_flight:
            return self._refuse(user, now, "in_flight", 0.0)
        if len(user.times) >= self.per_minute:
            return self._refuse(user, now, "rate", WINDOW_S - (now - user.times[0]))
        user.times.append(now)
        user.in_flight = True
        return Decision(True)

    def release(self, user_id: int) -> None:
        """The user's review in flight has been answered."""
        if user_id in self._users:
            self._users[user_id].in_flight = False

    def _refuse(self, user: _User, now: float, reason: str, retry_in: float) -> Decision:
        notify = now - user.last_notice >= NOTICE_EVERY_S
        if notify:
            user.last_notice = now
        return Decision(False, reason, retry_in, notify)
