"""Reliable delivery: no job is lost between a queue and the started registry, whatever signal
hits a worker, and every "is it abandoned?" decision is taken on Redis's clock.

RQ's worker takes a job off several queues with ``BLPOP``: from then until it registers the job
as started, the job is in no list and no registry, and a worker killed in that window loses it
for good.  Our workers take jobs with ``LMOVE`` into a processing list of their own, in one Lua
script that also refreshes a liveness key with a short TTL; registering the job as started
removes it from that list in the same transaction.  A job is therefore always in a queue, in
exactly one worker's processing list, in the started registry (whose entries expire with the
worker's heartbeat), or finished.  ``recover(conn)`` moves the processing lists of dead workers
(liveness key expired) back to the front of their queues; workers, producers and the bot call it.

Liveness is a key TTL, expired by Redis itself; the started registry's heartbeats are compared
with ``TIME`` from Redis: a host with a skewed clock can neither expire a running job early nor
keep a dead one alive.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis import Redis

#: A worker's dequeued-but-not-started jobs (a list of job ids).
PROCESSING_KEY = "sentiment:processing:{}"
#: Exists while the worker lives (a TTL refreshed by its loop and its heartbeat thread).
ALIVE_KEY = "sentiment:alive:{}"
#: Names of the workers that have a processing list.
WORKERS_KEY = "sentiment:processing-workers"
#: A worker is dead when it has not refreshed its liveness key for this long.
ALIVE_TTL_S = 15
#: Processing lists and the set of names expire unless a worker keeps using them.
BOOKKEEPING_TTL_S = 24 * 3600
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_JOB_PREFIX = "rq:job:"

# KEYS: processing list, alive key, workers set, then the queues in priority order.
# ARGV: alive TTL, worker name, bookkeeping TTL.
# Returns {queue key, job id}: a job this worker took earlier but did not start comes first
# (its registration failed, e.g. Redis ran out of memory), then the queues in order.
_TAKE = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
local pending = redis.call('LINDEX', KEYS[1], 0)
if pending then return {'', pending} end
for i = 4, #KEYS do
  local id = redis.call('LMOVE', KEYS[i], KEYS[1], 'LEFT', 'RIGHT')
  if id then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return {KEYS[i], id}
  end
end
return false
"""

# KEYS: processing list, queue, workers set.  ARGV: how many at most, bookkeeping TTL, worker.
# Moves up to that many ids from the queue's head to the processing list's tail, without waiting.
_TAKE_MORE = """
redis.call('SADD', KEYS[3], ARGV[3])
local ids = {}
for i = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[2], KEYS[1], 'LEFT', 'RIGHT')
  if not id then break end
  ids[#ids + 1] = id
end
if #ids > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return ids
"""

# KEYS: workers set.  ARGV: alive prefix, processing prefix, queue prefix, job prefix, and a
# worker name to recover even if alive ('' for none: the caller's own list, at shutdown).
# Every job of a dead worker's list goes back to the front of its queue (oldest first) if it
# is still queued; a deleted or cancelled job is dropped.  Returns how many went back.
_RECOVER = """
local moved = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if name == ARGV[5] or redis.call('EXISTS', ARGV[1] .. name) == 0 then
    local list = ARGV[2] .. name
    while true do
      local id = redis.call('RPOP', list)
      if not id then break end
      local job = ARGV[4] .. id
      local origin = redis.call('HGET', job, 'origin')
      if origin and redis.call('HGET', job, 'status') == 'queued' then
        redis.call('LPUSH', ARGV[3] .. origin, id)
        moved = moved + 1
      end
    end
    redis.call('SREM', KEYS[1], name)
  end
end
return moved
"""


def redis_time(conn: Redis) -> float:
    """Seconds since the epoch on the Redis server's clock (the one every host shares)."""
    seconds, micros = conn.time()
    return float(seconds) + micros / 1e6


def take(
    conn: Redis, worker: str, queue_keys: Sequence[str], alive_ttl: int = ALIVE_TTL_S
) -> tuple[str, str] | None:
    """Move the next job id into ``worker``'s processing list: (queue key or '', job id)."""
    keys = [PROCESSING_KEY.format(worker), ALIVE_KEY.format(worker), WORKERS_KEY, *queue_keys]
    found: Any = conn.eval(_TAKE, len(keys), *keys, alive_ttl, worker, BOOKKEEPING_TTL_S)
    if not found:
        return None
    queue_key, job_id = (v.decode() if isinstance(v, bytes) else str(v) for v in found)
    return queue_key, job_id


def take_blocking(
    conn: Redis, worker: str, queue_key: str, timeout: float
) -> tuple[str, str] | None:
    """Wait up to ``timeout`` s for a job on one queue, moving it into the processing list."""
    # Redis takes fractional timeouts; redis-py's annotation says int.
    found = conn.blmove(
        queue_key,
        PROCESSING_KEY.format(worker),
        timeout,  # type: ignore[arg-type]
        "LEFT",
        "RIGHT",
    )
    if found is None:
        return None
    conn.expire(PROCESSING_KEY.format(worker), BOOKKEEPING_TTL_S)
    return queue_key, found.decode() if isinstance(found, bytes) else str(found)


def take_more(conn: Redis, worker: str, queue_key: str, n: int) -> list[str]:
    """Take up to ``n`` more waiting job ids of one queue into ``worker``'s processing list, in
    queue order, without waiting (a worker batching jobs; see ``worker.batching``).  They are
    then the worker's like any job it took: started in turn, put back at shutdown, recovered by
    others if it dies."""
    if n <= 0:
        return []
    keys = [PROCESSING_KEY.format(worker), queue_key, WORKERS_KEY]
    found: Any = conn.eval(_TAKE_MORE, len(keys), *keys, n, BOOKKEEPING_TTL_S, worker)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in found or []]


# KEYS: processing list, queue.  ARGV: job ids in queue order.  Those still in the list go back
# to the queue's head, in the same order.
_GIVE_BACK = """
for i = #ARGV, 1, -1 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[i]) end
end
return 0
"""


def give_back(conn: Redis, worker: str, queue_key: str, job_ids: Sequence[str]) -> None:
    """Put jobs taken ahead but not started back at the head of their queue, in order, for any
    worker to take (a batching worker took more than one pass holds)."""
    if job_ids:
        conn.eval(_GIVE_BACK, 2, PROCESSING_KEY.format(worker), queue_key, *job_ids)


def keep_alive(conn: Redis, worker: str, ttl: int = ALIVE_TTL_S) -> None:
    """Refresh the worker's liveness key (its processing list is not recovered meanwhile)."""
    conn.set(ALIVE_KEY.format(worker), "1", ex=ttl)


def started(pipeline: Any, worker: str, job_id: str) -> None:
    """Queue, in the caller's transaction, the removal of a job from the processing list."""
    pipeline.lrem(PROCESSING_KEY.format(worker), 1, job_id)


def recover(conn: Redis, include: str = "") -> int:
    """Put the jobs of dead workers' processing lists (and ``include``'s) back on their queues."""
    moved: Any = conn.eval(
        _RECOVER,
        1,
        WORKERS_KEY,
        ALIVE_KEY.format(""),
        PROCESSING_KEY.format(""),
        RQ_QUEUE_PREFIX,
        RQ_JOB_PREFIX,
        include,
    )
    return int(moved)


def release(conn: Redis, worker: str) -> int:
    """At shutdown: the worker's liveness key goes, its untouched jobs go back to their queues."""
    conn.delete(ALIVE_KEY.format(worker))
    return recover(conn, include=worker)


class RedisClock:
    """``time.time()`` corrected to the Redis server's clock (the offset is re-measured every
    ``refresh_s``), for RQ's timestamps: heartbeat scores and their expiry decisions."""

    def __init__(self, conn: Redis, refresh_s: float = 60.0) -> None:
        self.conn = conn
        self.refresh_s = refresh_s
        self.offset = 0.0
        self._measured = float("-inf")

    def measure(self) -> float:
        before = time.time()
        server = redis_time(self.conn)
        self.offset = server - (before + time.time()) / 2
        self._measured = time.monotonic()
        return self.offset

    def now(self) -> float:
        if time.monotonic() - self._measured > self.refresh_s:
            try:
                self.measure()
            except Exception:  # Redis away: keep the last offset
                self._measured = time.monotonic()
        return time.time() + self.offset

    def timestamp(self) -> int:
        """What ``rq.utils.current_timestamp`` returns, on the Redis clock."""
        return int(self.now())

    def install(self) -> None:
        """Make RQ (registries, executions) take its timestamps from this clock."""
        import rq.executions
        import rq.registry
        import rq.utils

        self.measure()
        for module in (rq.utils, rq.registry, rq.executions):
            module.current_timestamp = self.timestamp  # type: ignore[attr-defined]
