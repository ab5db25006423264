"""The asynchronous side of the queue, shared by the bot and the HTTP API.

Both serve people who wait for an answer, from one event loop, many at a time:

* **Enqueueing** runs the producers' own ``shared.queues.enqueue_payloads`` (reuse rules,
  version checks, RQ's ``enqueue_many``) on a small thread pool of this client: one code path
  for every producer, and no reliance on the order of RQ's internal Redis calls.
* **Waiting** is ``XREAD BLOCK`` on the job's RQ result stream: the answer arrives the moment the
  worker writes it, with no polling and no thread.
* **Cancelling** a job nobody waits for any more (timeouts, Redis errors) deletes it only if this
  client created it, it is still queued, and no other request came to share it (one Lua script:
  a request never cancels a job it did not create).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from rq.job import JobStatus
from rq.results import Result
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from shared.announcements import SERVED_MODEL_KEY
from shared.outcomes import (
    SUCCESSFUL_TYPE,
    Outcome,
    ended_outcome,
    restore_entry,
    result_outcome,
)
from shared.queues import (
    INTERACTIVE_RESULT_TTL_S,
    JOB_TIMEOUT_S,
    QUEUE_INTERACTIVE,
    connect,
    enqueue_payloads,
    get_queue,
)
from shared.reuse import CANCEL_SCRIPT, SHARED_FIELD, cancel_keys
from shared.schema import make_payload

log = structlog.get_logger(__name__)


#: Longest single XREAD BLOCK (the client's socket timeout must be longer).
BLOCK_SLICE_S = 5.0
#: How long closing waits for cancellations still running.
CLOSE_WAIT_S = 5.0
#: Connections to Redis at most (Redis's own default limit is 10,000 clients).
MAX_CONNECTIONS = 2000
#: How long a request waits for a free connection when all are in use.
POOL_WAIT_S = 20.0
#: Tries to cancel a job while Redis is away (about a minute with the growing pause).
CANCEL_ATTEMPTS = 15
#: Threads that enqueue (each holds one Redis round trip at a time).
ENQUEUE_THREADS = 8
#: How long the served version read from Redis is trusted (workers take about a second to
#: reload a new version anyway).
VERSION_CACHE_S = 0.5


@dataclass(frozen=True)
class Ticket:
    """A submitted job: its id, and whether this submission created it (only then may it be
    cancelled by the submitter)."""

    job_id: str
    created: bool


class AsyncQueueClient:
    """Enqueue reviews and await their results from an event loop."""

    def __init__(
        self,
        redis_url: str,
        queue: str = QUEUE_INTERACTIVE,
        job_timeout: int = JOB_TIMEOUT_S,
        result_ttl: int = INTERACTIVE_RESULT_TTL_S,
        failure_ttl: int = INTERACTIVE_RESULT_TTL_S,
        max_connections: int | None = None,
    ) -> None:
        # The sync client enqueues (in this client's threads), checks readiness and cancels.
        self.conn = connect(redis_url, check=False)
        # Each waiting request holds a connection in XREAD BLOCK.  A blocking pool makes a
        # burst beyond ``max_connections`` wait for a free connection (up to POOL_WAIT_S)
        # instead of failing with "Too many connections" (redis-py's default cap is 100).
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=max_connections or MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            socket_timeout=BLOCK_SLICE_S + 10,
            socket_connect_timeout=5,
        )
        self.aconn = aioredis.Redis.from_pool(pool)
        self.queue = get_queue(queue, self.conn)
        self.job_timeout = job_timeout
        self.result_ttl, self.failure_ttl = result_ttl, failure_ttl
        self._threads = ThreadPoolExecutor(ENQUEUE_THREADS, thread_name_prefix="enqueue")
        self._version: tuple[float, str] = (float("-inf"), "")
        self._cancelling: set[asyncio.Future[None]] = set()

    async def served_version(self) -> str:
        """The version the workers announce (read at most every ``VERSION_CACHE_S``)."""
        at, version = self._version
        if time.monotonic() - at >= VERSION_CACHE_S:
            raw: Any = await self.aconn.hget(SERVED_MODEL_KEY, "model_version")
            version = raw.decode() if raw else ""
            self._version = (time.monotonic(), version)
        return version

    async def submit(
        self, review_id: str, text: str, top_words: int, sentences: bool = False
    ) -> Ticket:
        """Enqueue one review for the serving version (``sentences``: answered per sentence)."""
        version = await self.served_version()
        payload = make_payload([(review_id, text)], top_words, version, sentences=sentences)
        return await self.submit_payload(payload)

    async def submit_payload(self, payload: dict[str, Any]) -> Ticket:
        """Enqueue a payload unless its job is in flight or answered by its version.

        Job ids come from the content and the version (as for every producer): the same
        reviews asked again while the first job is in flight, or within the answer's retention,
        run once; after a publish or a rollback they run again on the new version.
        """
        created: list[str] = []

        def enqueue() -> list[str]:
            return enqueue_payloads(
                self.queue,
                [payload],
                timeout=self.job_timeout,
                result_ttl=self.result_ttl,
                failure_ttl=self.failure_ttl,
                created=created,
            )

        loop = asyncio.get_running_loop()
        (job_id,) = await loop.run_in_executor(self._threads, enqueue)
        return Ticket(job_id, job_id in created)

    async def wait(self, job_id: str, timeout: float) -> Outcome | None:
        """The job's outcome, or None if it did not end within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        key = Result.get_key(job_id)
        last = "0-0"
        while (remaining := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(1000 * min(remaining, BLOCK_SLICE_S)))
            response: Any = await self.aconn.xread({key: last}, block=block_ms)
            for _stream, entries in response or []:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    if fields.get(b"type") == SUCCESSFUL_TYPE:
                        entry = [(entry_id, fields)]
                        return ended_outcome(self.conn, job_id, JobStatus.FINISHED, entry)
                    result = restore_entry(self.conn, job_id, last, fields)
                    if result.type == Result.Type.RETRIED:
                        continue
                    return result_outcome(job_id, result)
        return None

    async def cancel(self, ticket: Ticket, attempts: int = CANCEL_ATTEMPTS) -> None:
        """Drop a job nobody waits for any more: only one this client created, still queued and
        not shared since (a job already running finishes; its answer expires with the
        interactive retention).  While Redis is away it is retried ``attempts`` times."""
        if not ticket.created:
            return
        keys = cancel_keys(ticket.job_id, self.queue.name)
        pause = 0.5
        for attempt in range(1, attempts + 1):
            try:
                await self.aconn.eval(CANCEL_SCRIPT, len(keys), *keys, ticket.job_id, SHARED_FIELD)
                return
            except RedisError as exc:
                if attempt == attempts:
                    log.warning("cancel_failed", job_id=ticket.job_id, reason=str(exc))
                    return
                await asyncio.sleep(pause)
                pause = min(2 * pause, 5.0)

    def cancel_later(self, ticket: Ticket) -> None:
        """``cancel`` in the background (Redis may take a while to come back); ``close``
        gives pending cancellations a few seconds."""
        task = asyncio.ensure_future(self.cancel(ticket))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def served_model(self) -> dict[str, str]:
        """The workers' latest announcement of the version they serve."""
        raw: dict[bytes, bytes] = await self.aconn.hgetall(SERVED_MODEL_KEY)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def live_workers(self) -> int:
        """How many workers listening to this client's queue have a live registration (a
        worker's key expires when its heartbeat stops)."""
        key = WORKERS_BY_QUEUE_KEY % self.queue.name
        names: set[bytes] = await self.aconn.smembers(key)  # type: ignore[assignment]
        if not names:
            return 0
        async with self.aconn.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(name)
            alive = await pipe.execute()
        return sum(1 for a in alive if a)

    async def close(self) -> None:
        """Finish (or drop after CLOSE_WAIT_S) pending cancellations; close both connections."""
        if self._cancelling:
            _, late = await asyncio.wait(set(self._cancelling), timeout=CLOSE_WAIT_S)
            for task in late:
                task.cancel()
        await self.aconn.aclose()
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.conn.close()
