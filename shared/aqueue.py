"""The asynchronous side of the queue, shared by the bot and the HTTP API.

Both serve people who wait for an answer, from one event loop, many at a time.  Nothing here
holds a thread while it waits:

* **Enqueueing** runs RQ's own ``Queue.enqueue_many`` against a *recording* pipeline (RQ writes
  the job hash, the queue push and the queue registration through the pipeline it is given and
  reads nothing once the server version is known), then replays those commands on a
  ``redis.asyncio`` pipeline: the job a worker sees is exactly the one RQ would have written,
  without a thread per request.
* **Waiting** is ``XREAD BLOCK`` on the job's RQ result stream: the answer arrives the moment the
  worker writes it, with no polling.
* **Cancelling** a job nobody waits for any more (rare: timeouts, Redis errors) uses RQ's
  ``Job.delete`` in a worker thread, retried while Redis is away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from shared.queues import (
    INTERACTIVE_RESULT_TTL_S,
    JOB_TIMEOUT_S,
    QUEUE_INTERACTIVE,
    SERVED_MODEL_KEY,
    Outcome,
    connect,
    get_queue,
    job_data,
    job_id_for,
    result_outcome,
)
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
#: Statuses of a job that is in flight or answered: enqueueing it again would run it twice.
LIVE = {
    JobStatus.QUEUED.value,
    JobStatus.STARTED.value,
    JobStatus.FINISHED.value,
    JobStatus.DEFERRED.value,
    JobStatus.SCHEDULED.value,
}


class _Recorder:
    """Stands in for a Redis pipeline: records the commands RQ queues on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> _Recorder:
            self.calls.append((name, args, kwargs))
            return self

        return record


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
        # The sync client is used at start (readiness checks) and by cancel(); RQ's Queue needs
        # one to build jobs, but never talks to Redis through it when enqueueing here.
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
        self._cancelling: set[asyncio.Future[None]] = set()

    async def _server_version(self) -> None:
        if getattr(self.queue, "redis_server_version", None) is None:
            info: dict[str, Any] = await self.aconn.info("server")
            parts = [*(int(p) for p in str(info["redis_version"]).split(".")[:3]), 0, 0]
            self.queue.redis_server_version = (parts[0], parts[1], parts[2])

    async def submit(self, review_id: str, text: str, top_words: int) -> str:
        """Enqueue one review; return the job id."""
        (job_id,) = await self.submit_payloads([make_payload([(review_id, text)], top_words)])
        return job_id

    async def submit_payloads(self, payloads: Sequence[dict[str, Any]]) -> list[str]:
        """Enqueue the payloads whose job is not already in flight or answered; all their ids.

        Job ids come from the content (as for every producer): the same review asked twice
        while the first is in flight, or within the result's retention, runs once.
        """
        await self._server_version()
        ids = [job_id_for(p) for p in payloads]
        async with self.aconn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = await pipe.execute()
        recorder, reused, seen = _Recorder(), [], set()
        datas = []
        for job_id, raw, payload in zip(ids, statuses, payloads, strict=True):
            status = raw.decode() if isinstance(raw, bytes) else raw
            if job_id in seen:
                continue
            seen.add(job_id)
            if status in LIVE:
                if status == JobStatus.FINISHED.value:
                    reused.append(job_id)
                continue
            datas.append(
                job_data(payload, job_id, self.job_timeout, self.result_ttl, self.failure_ttl)
            )
        if datas:
            self.queue.enqueue_many(datas, pipeline=recorder)  # type: ignore[arg-type]
            async with self.aconn.pipeline(transaction=True) as pipe:
                for name, args, kwargs in recorder.calls:
                    getattr(pipe, name)(*args, **kwargs)
                await pipe.execute()
        if reused:
            await self._extend(reused)
        return ids

    async def _extend(self, job_ids: Sequence[str]) -> None:
        """A reused answer stays at least the retention of the request that reuses it."""
        keys = [k for job_id in job_ids for k in (Job.key_for(job_id), Result.get_key(job_id))]
        async with self.aconn.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.ttl(key)
            remaining = await pipe.execute()
            for key, left in zip(keys, remaining, strict=True):
                if 0 <= left < self.result_ttl:
                    pipe.expire(key, self.result_ttl)
            await pipe.execute()

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
                    result = Result.restore(
                        job_id, last, fields, connection=self.conn, serializer=JSONSerializer
                    )
                    if result.type == Result.Type.RETRIED:
                        continue
                    return result_outcome(job_id, result)
        return None

    async def cancel(self, job_id: str, attempts: int = CANCEL_ATTEMPTS) -> None:
        """Drop a job nobody waits for any more: a job still queued is deleted with its text; one
        already running finishes and its result expires with the interactive retention.  While
        Redis is away, the cancellation is retried (with a growing pause) ``attempts`` times."""

        def cancel() -> None:
            try:
                job = Job.fetch(job_id, connection=self.conn, serializer=JSONSerializer)
                if job.get_status(refresh=False) == JobStatus.QUEUED:
                    job.delete(remove_from_queue=True)
            except (NoSuchJobError, InvalidJobOperation, ValueError) as exc:
                log.debug("cancel_skipped", job_id=job_id, reason=str(exc))

        pause = 0.5
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.to_thread(cancel)
                return
            except RedisError as exc:
                if attempt == attempts:
                    log.warning("cancel_failed", job_id=job_id, reason=str(exc))
                    return
                await asyncio.sleep(pause)
                pause = min(2 * pause, 5.0)

    def cancel_later(self, job_id: str) -> None:
        """``cancel`` in the background (Redis may take a while to come back); ``close``
        gives pending cancellations a few seconds."""
        task = asyncio.ensure_future(self.cancel(job_id))
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
        self.conn.close()
