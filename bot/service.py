"""The bot's side of the queue: enqueue one review, await its result without blocking the loop.

Enqueueing uses the same RQ code as every producer (in a worker thread: it is a few fast Redis
calls).  Waiting uses ``redis.asyncio``: ``XREAD BLOCK`` on the job's RQ result stream, so the
answer arrives the moment the worker writes it, with no polling and no thread held per waiting
user.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from shared.queues import (
    INTERACTIVE_RESULT_TTL_S,
    JOB_TIMEOUT_S,
    QUEUE_INTERACTIVE,
    SERVED_MODEL_KEY,
    Outcome,
    connect,
    enqueue_payloads,
    get_queue,
    result_outcome,
)
from shared.schema import make_payload

log = structlog.get_logger(__name__)

#: Longest single XREAD BLOCK (the client's socket timeout must be longer).
BLOCK_SLICE_S = 5.0
#: Tries to cancel a job while Redis is away (about a minute with the growing pause).
CANCEL_ATTEMPTS = 15


class QueueClient:
    """Enqueue reviews and await their results from the bot's event loop."""

    def __init__(
        self,
        redis_url: str,
        job_timeout: int = JOB_TIMEOUT_S,
        result_ttl: int = INTERACTIVE_RESULT_TTL_S,
        failure_ttl: int = INTERACTIVE_RESULT_TTL_S,
    ) -> None:
        self.conn = connect(redis_url, check=False)
        self.aconn = aioredis.Redis.from_url(
            redis_url, socket_timeout=BLOCK_SLICE_S + 10, socket_connect_timeout=5
        )
        self.queue = get_queue(QUEUE_INTERACTIVE, self.conn)
        self.job_timeout = job_timeout
        self.result_ttl, self.failure_ttl = result_ttl, failure_ttl

    async def submit(self, review_id: str, text: str, top_words: int) -> str:
        """Enqueue one review on the interactive queue; return the job id."""
        payload = make_payload([(review_id, text)], top_words)
        (job_id,) = await asyncio.to_thread(
            enqueue_payloads,
            self.queue,
            [payload],
            timeout=self.job_timeout,
            result_ttl=self.result_ttl,
            failure_ttl=self.failure_ttl,
        )
        return job_id

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

    async def served_model(self) -> dict[str, str]:
        """The workers' latest announcement of the version they serve."""
        raw: dict[bytes, bytes] = await self.aconn.hgetall(SERVED_MODEL_KEY)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def close(self) -> None:
        """Close both Redis connections."""
        await self.aconn.aclose()
        self.conn.close()
