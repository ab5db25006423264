"""One trainer at a time: a Redis lock with an expiry, refreshed while held.

A killed holder stops refreshing and the lock lapses after its TTL; a holder whose lock lapsed
(Redis restarted, a long pause) notices before publishing and publishes nothing.
"""

from __future__ import annotations

import threading
import time
import uuid

import structlog
from redis import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

LOCK_KEY = "sentiment:trainer:lock"
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_REFRESH = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)


class LockHeld(RuntimeError):
    """Another trainer holds the lock."""


class RedisLock:
    """A lock with an expiry, refreshed by a thread while held; released only by its owner.

    A killed holder stops refreshing and the lock lapses after ``ttl`` seconds.  ``lost`` is set
    when a refresh finds the lock gone or taken (then the holder must not publish)."""

    def __init__(self, conn: Redis, ttl_s: int, key: str = LOCK_KEY) -> None:
        self.conn, self.ttl_ms, self.key = conn, ttl_s * 1000, key
        self.token = uuid.uuid4().hex
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_s
        while not self.conn.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.05, self.ttl_ms / 3000)))
        self._thread = threading.Thread(target=self._refresh, name="trainer-lock", daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.conn.eval(_REFRESH, 1, self.key, self.token, self.ttl_ms):
                    self.lost.set()
                    log.error("trainer_lock_lost", key=self.key)
                    return
            except RedisError as exc:  # Redis away: the lock may lapse; checked before publish
                log.warning("trainer_lock_refresh_failed", reason=str(exc))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.token)
        except RedisError as exc:  # it lapses by itself
            log.warning("trainer_lock_release_failed", reason=str(exc))

    def still_held(self) -> bool:
        try:
            return not self.lost.is_set() and self.conn.get(self.key) == self.token.encode()
        except RedisError:
            return False
