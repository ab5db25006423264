"""Redis connection and the queues: names, job options, deterministic ids, enqueue and collect.

Two queues; workers listen to both, the interactive one first, so a bulk file of 25k reviews
cannot starve a Telegram user (RQ drains queues in the order given)::

    sentiment-interactive   single reviews from the bot and sentiment-classify
    sentiment-bulk          chunks of files from sentiment-enqueue

Jobs are enqueued by the dotted path ``JOB_FUNCTION`` with RQ's JSON serializer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions
import structlog
from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result

from shared import metrics, reliable
from shared.outcomes import Outcome, outcomes_of
from shared.reuse import answered_by, expected_version, extend_results, reuse, share_jobs
from shared.schema import JOB_FUNCTION
from shared.serializer import JSONSerializer

log = structlog.get_logger(__name__)

QUEUE_INTERACTIVE = "sentiment-interactive"
QUEUE_BULK = "sentiment-bulk"
#: What a worker listens to by default, in priority order.
WORKER_QUEUES = (QUEUE_INTERACTIVE, QUEUE_BULK)
JOB_TIMEOUT_S = 60
#: Default retention (settings RESULT_TTL_S, FAILURE_TTL_S, INTERACTIVE_RESULT_TTL_S): how long
#: a finished bulk job keeps its result, a failed job its record, an interactive answer its text.
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 24 * 3600
INTERACTIVE_RESULT_TTL_S = 600
JOB_RETRIES = 2
#: redis-py 8 defaults to a 5 s read timeout; blocking waits must stay below this.
SOCKET_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
CONNECT_ATTEMPTS = 6
#: How long a process waits at start for Redis to answer before it says it cannot reach it.
WAIT_FOR_REDIS_S = 8.0
JOB_ID_PREFIX = "sentiment-"
#: Reviews per enqueue pipeline (8 bulk jobs): small enough that workers start while a big file
#: is still going in ...
PIPELINE_REVIEWS = 2048
#: ... and jobs at most: one-review jobs (a load of chat messages or API calls) go in by the
#: hundred, so a batching worker finds them waiting together (issue 25: by eight, a worker
#: answered them in small groups as they trickled in).
PIPELINE_JOBS = 256
#: How often ``collect`` looks at its whole window while the oldest job has not ended.
FULL_POLL_S = 0.25
#: Jobs in the first pipeline (each next one twice as many, up to the cap).
FIRST_PIPELINE_JOBS = 16


def redis_out_of_memory(exc: BaseException) -> bool:
    """Whether Redis refused a write because it reached ``maxmemory`` (policy noeviction).

    redis-py 5.1+ raises ``OutOfMemoryError`` (message without the ``OOM`` prefix); older
    versions a plain ``ResponseError`` whose message starts with ``OOM``."""
    oom = getattr(redis.exceptions, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (
        isinstance(exc, ResponseError) and str(exc).startswith("OOM")
    )


class RedisUnavailable(RuntimeError):
    """Redis could not be reached after bounded retries."""


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, socket_timeout: float = SOCKET_TIMEOUT_S, check: bool = True) -> Redis:
    """A Redis client with bounded, backed-off retries; ``check`` pings it (RedisUnavailable)."""
    conn = Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=30,
        retry=RedisRetry(ExponentialBackoff(cap=2.0, base=0.1), CONNECT_ATTEMPTS),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    if check:
        wait_for_redis(conn, url)
        check_memory_policy(conn)
    return conn


def check_memory_policy(conn: Redis) -> str | None:
    """Warn unless Redis refuses writes when full (``maxmemory-policy noeviction``, as Sidekiq
    and BullMQ require): any other policy silently evicts queued jobs and results."""
    try:
        policy = str(conn.config_get("maxmemory-policy").get("maxmemory-policy", ""))
    except (ResponseError, RedisConnectionError, RedisTimeoutError):  # CONFIG may be disabled
        log.info("redis_memory_policy_unknown")
        return None
    if policy != "noeviction":
        log.warning(
            "redis_memory_policy",
            policy=policy,
            required="noeviction",
            risk="a full Redis evicts queued jobs and results instead of refusing new work",
        )
    return policy


def wait_for_redis(conn: Redis, url: str, patience_s: float = WAIT_FOR_REDIS_S) -> None:
    """PING until Redis answers; RedisUnavailable after ``patience_s`` seconds in all.

    The probe is a client of its own with no retries of its own (``conn``'s retries, meant to
    ride out a blip while working, would multiply the wait at start: a minute before one line
    said Redis was unreachable)."""
    probe = Redis.from_url(
        url, socket_connect_timeout=2.0, socket_timeout=2.0, retry=RedisRetry(NoBackoff(), 0)
    )
    deadline = time.monotonic() + patience_s
    delay, attempt = 0.2, 0
    try:
        while True:
            attempt += 1
            try:
                probe.ping()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RedisUnavailable(
                        f"cannot reach Redis at {redact_url(url)} "
                        f"({attempt} attempts in {patience_s:g} s): {exc}"
                    ) from exc
                log.warning(
                    "redis_unreachable", url=redact_url(url), attempt=attempt, retry_in_s=delay
                )
                time.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)
            except RedisError as exc:  # something answers, but not as Redis: waiting won't help
                raise RedisUnavailable(
                    f"{redact_url(url)} does not answer as Redis: {exc}"
                ) from exc
    finally:
        probe.close()


def get_queue(name: str, conn: Redis) -> Queue:
    """An RQ queue with our serializer (JSON) and default job timeout."""
    return Queue(name, connection=conn, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT_S)


def job_id_for(payload: dict[str, Any], queue: str = QUEUE_BULK) -> str:
    """Deterministic id from the payload's content and the queue: re-enqueueing the same input
    is a no-op.  The payload names the serving version (``make_payload``), so a new version gets
    new ids; the queue keeps interactive and bulk jobs apart (their retention differs, and a
    request never holds a batch's job, nor a batch a request's)."""
    blob = json.dumps([queue, payload], sort_keys=True, ensure_ascii=False)
    return JOB_ID_PREFIX + hashlib.sha256(blob.encode()).hexdigest()[:32]


def job_data(
    payload: dict[str, Any], job_id: str, timeout: int, result_ttl: int, failure_ttl: int
) -> Any:
    """RQ's description of one classification job (``Queue.enqueue_many`` takes a list)."""
    return Queue.prepare_data(
        JOB_FUNCTION,
        args=(payload,),
        job_id=job_id,
        timeout=timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        retry=Retry(max=JOB_RETRIES),
        description=f"{len(payload['reviews'])} reviews",
    )


def _pipelines(payloads: Sequence[dict[str, Any]], max_jobs: int) -> Iterator[tuple[int, int]]:
    """Start and end of each enqueue pipeline: ``PIPELINE_REVIEWS`` reviews, ``max_jobs`` jobs
    at most.  The first pipelines are smaller (16 jobs, doubling up to the cap), so workers
    start while the next ones are being sent instead of waiting for a full one."""
    start = reviews = 0
    cap = min(max_jobs, FIRST_PIPELINE_JOBS)
    for i, payload in enumerate(payloads):
        reviews += len(payload["reviews"])
        if i + 1 - start >= cap or reviews >= PIPELINE_REVIEWS:
            yield start, i + 1
            start, reviews, cap = i + 1, 0, min(max_jobs, 2 * cap)
    if start < len(payloads):
        yield start, len(payloads)


def enqueue_payloads(
    queue: Queue,
    payloads: Sequence[dict[str, Any]],
    timeout: int = JOB_TIMEOUT_S,
    pipeline_size: int = PIPELINE_JOBS,
    progress: Any = None,
    ids: Sequence[str] | None = None,
    result_ttl: int = RESULT_TTL_S,
    failure_ttl: int = FAILURE_TTL_S,
    created: list[str] | None = None,
) -> list[str]:
    """Enqueue payloads whose job is not already in flight or answered; return all ids (and
    add to ``created`` those this call enqueued).

    A job in flight is marked shared and kept at least ``result_ttl``; a finished one is reused
    when the version its payload names answered it, and keeps its result at least
    ``result_ttl`` more seconds, like the batch that now counts on it.  Failed jobs, and answers
    of another version, are replaced (their old result deleted first, so no reader mistakes it
    for the new one).  Pipelines of ``PIPELINE_REVIEWS`` reviews (``pipeline_size`` jobs at
    most) keep round trips low while letting workers start on the first jobs before the whole
    file is enqueued.
    """
    conn = queue.connection
    ids = list(ids) if ids is not None else [job_id_for(p, queue.name) for p in payloads]
    for start, end in _pipelines(payloads, pipeline_size):
        part = dict(zip(ids[start:end], payloads[start:end], strict=True))
        with conn.pipeline(transaction=False) as pipe:
            for job_id in part:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = [s.decode() if s else None for s in pipe.execute()]
        finished = [j for j, s in zip(part, statuses, strict=True) if s == JobStatus.FINISHED]
        with conn.pipeline(transaction=False) as pipe:
            for job_id in finished:
                pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
            versions = dict(zip(finished, pipe.execute() if finished else [], strict=True))
        datas: list[Any] = []
        replaced: list[str] = []
        shared: list[str] = []
        reused: list[str] = []
        reviews = 0
        for (job_id, payload), status in zip(part.items(), statuses, strict=True):
            by = answered_by(versions[job_id], job_id, conn) if job_id in versions else None
            action = reuse(status, by, expected_version(payload))
            if action == "reuse":
                metrics.REUSED_JOBS.inc()
                (reused if status == JobStatus.FINISHED else shared).append(job_id)
                continue
            if action == "replace":
                replaced.append(job_id)
            datas.append(job_data(payload, job_id, timeout, result_ttl, failure_ttl))
            reviews += len(payload["reviews"])
        if datas:
            with conn.pipeline() as pipe:
                for job_id in replaced:
                    pipe.delete(Job.key_for(job_id), Result.get_key(job_id))
                queue.enqueue_many(datas, pipeline=pipe)
                pipe.execute()
            metrics.ENQUEUED_JOBS.labels(queue.name).inc(len(datas))
            metrics.ENQUEUED_REVIEWS.labels(queue.name).inc(reviews)
            metrics.RETRIED_JOBS.inc(len(replaced))
            if created is not None:
                created.extend(data.job_id for data in datas)
        if shared:
            share_jobs(conn, shared, result_ttl, failure_ttl)
        if reused:
            extend_results(conn, reused, result_ttl)
        if progress is not None:
            progress.update(len(part))
    return ids


def collect(
    conn: Redis,
    job_ids: Iterable[str],
    timeout: float | None = None,
    poll: float = 0.05,
    on_done: Any = None,
    recover_every: float = 5.0,
    window: int = 128,
) -> dict[str, Outcome]:
    """Wait for jobs to end; returns an Outcome per id (timed-out jobs get an error).

    Workers take jobs in FIFO order, so each poll looks at the ``window`` oldest pending jobs
    only, and while they are all still running at the oldest one only: the producer's load on
    Redis stays small however long the batch.  Every
    ``recover_every`` seconds the started registries are cleaned, so a job whose worker was killed
    is retried by another worker instead of waiting for RQ's periodic maintenance.
    """
    pending = list(dict.fromkeys(job_ids))
    outcomes: dict[str, Outcome] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    last_recover = time.monotonic()
    probe, last_full = False, float("-inf")
    while pending:
        # After a poll that found nothing new, only the oldest job is watched (a window of
        # statuses every few ms cost the producer more CPU than the worker spent on one-review
        # jobs, issue 25), with the whole window again every FULL_POLL_S (jobs end out of order
        # with several workers, or behind a job being retried) and before any deadline.
        now = time.monotonic()
        full = (
            not probe
            or now - last_full >= FULL_POLL_S
            or (deadline is not None and now >= deadline)
        )
        if full:
            last_full = now
        size = window if full else 1
        head, rest = pending[:size], pending[size:]
        still: list[str] = []
        # Only the status field: loading whole jobs would decompress every payload each poll.
        with conn.pipeline(transaction=False) as pipe:
            for job_id in head:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = pipe.execute()
        for job_id, outcome in zip(head, outcomes_of(conn, head, statuses), strict=True):
            if outcome is None:
                still.append(job_id)
            else:
                outcomes[job_id] = outcome
                if on_done is not None:
                    on_done(outcome)
        pending = still + rest
        if not pending:
            break
        progressed = len(still) < len(head)
        probe = not progressed
        now = time.monotonic()
        if deadline is not None and now >= deadline and full:
            for job_id in pending:
                outcomes[job_id] = Outcome(job_id, error="timed out waiting for a worker")
            break
        if now - last_recover >= recover_every:
            metrics.RECOVERED_JOBS.inc(recover_abandoned(conn))
            last_recover = now
        if not progressed:
            time.sleep(poll)
    return outcomes


def recover_abandoned(conn: Redis) -> int:
    """Jobs whose worker died go back to work: what it had taken but not started returns to
    its queue; a started job whose heartbeat expired (judged on Redis's clock, not this host's)
    is retried, or failed once its retries are used up.  Returns the jobs put back in a queue
    from dead workers' processing lists."""
    moved = reliable.recover(conn)
    now = reliable.redis_time(conn)
    for name in WORKER_QUEUES:
        StartedJobRegistry(name, connection=conn, serializer=JSONSerializer).cleanup(timestamp=now)
    return moved
