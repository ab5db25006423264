"""The delivery core of our workers, with no model in it: reliable dequeue, heartbeats on Redis's
clock, refusal of foreign jobs, and surviving a Redis that is out of memory.

``ReliableWorker`` is an RQ ``SimpleWorker`` (no fork per job: TensorFlow is not fork-safe) that

* takes jobs with ``shared.reliable.take`` (LMOVE into its own processing list) instead of
  RQ's ``BLPOP``, and removes a job from that list in the transaction that registers it as
  started: at no moment is a job in no list and no registry (see ``shared.reliable``);
* at shutdown (SIGTERM, ``docker stop``) puts what it took but did not start back at the front
  of its queue; after a SIGKILL another worker or a producer does, once its liveness key expires;
* refreshes its liveness key and the job's heartbeat from a background thread while a job runs,
  so a long job is never taken for abandoned and a killed worker's job is retried within
  ``HEARTBEAT_TTL_S``; every timestamp RQ writes or compares comes from Redis's clock;
* runs only jobs our producers make (``job_contract_breaches``): ``shared.schema.JOB_FUNCTION``
  (anyone who can write to Redis could name ``os.system``), no success/failure/stopped callback
  (RQ imports and calls the named function), no webhook (RQ POSTs to its URL), no dependency or
  repeat, no more retries than ``JOB_RETRIES``.  Any other job is failed without running, with
  its callbacks and webhooks dropped first, and logged;
* keeps an answer as long as the longest holder of a shared job asked (``handle_job_success``
  re-reads the retention producers may have raised while the job waited);
* when Redis refuses writes (``maxmemory`` reached), logs one line, keeps every job where it
  is and waits for memory, instead of exiting with a job left behind.

``worker.service.ReloadingWorker`` adds the model (hot reload, announcements) on top.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.worker import WorkerStatus

from shared import reliable
from shared.collector import paused
from shared.queues import JOB_RETRIES, recover_abandoned, redis_out_of_memory
from shared.schema import JOB_FUNCTION
from worker import metrics
from worker.contract import disarm, job_contract_breaches
from worker.together import finish_together

log = structlog.get_logger(__name__)

#: How often the heartbeat thread beats while a job runs, and how long a beat is good for.
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = reliable.ALIVE_TTL_S
#: The longest single blocking wait on the first queue: a job arriving on another queue while
#: the worker waits is taken at most this late.
BLOCK_S = 0.2
#: Back-off while Redis is unreachable or out of memory.
BACKOFF_S = (0.5, 5.0)
#: The longest a worker's command-channel thread waits before checking whether to stop.
PUBSUB_WAKE_S = 0.5
#: How often an idle worker refreshes its RQ heartbeat and recovers what dead workers left.
HOUSEKEEPING_EVERY_S = 5.0


class ReliableWorker(SimpleWorker):  # type: ignore[misc]
    """SimpleWorker with a reliable dequeue, heartbeats and a job-function allowlist."""

    #: The only job functions this worker runs.
    job_functions: frozenset[str] = frozenset({JOB_FUNCTION})
    #: The most retries a job may ask for (what our producers set).
    max_retries: int = JOB_RETRIES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = reliable.RedisClock(self.connection)
        self._redis_trouble: str | None = None
        self._backoff = BACKOFF_S[0]
        self._housekept = float("-inf")

    # -- taking jobs ----------------------------------------------------------------------
    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        self.clock.install()
        reliable.recover(self.connection)  # what dead workers left behind
        super().bootstrap(*args, **kwargs)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """The next job, taken into this worker's processing list (``None``: burst and empty)."""
        self._set_idle()
        self.procline("Listening on " + ",".join(self.queue_names()))
        keys = [q.key for q in self._ordered_queues]
        while True:
            if self._stop_requested:
                return None  # the work loop ends, teardown releases nothing (nothing taken)
            try:
                self.housekeeping()
                self.idle()
                found = reliable.take(self.connection, self.name, keys)
                if found is None and timeout is not None:
                    found = reliable.take_blocking(self.connection, self.name, keys[0], BLOCK_S)
                self._redis_recovered()
                if found is None:
                    if timeout is None:
                        return None
                    continue
                dequeued = self._fetch(*found)
                if dequeued is not None:
                    return dequeued
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                    raise
                self._redis_trouble_wait(exc)

    def housekeeping(self) -> None:
        """Every few seconds: RQ's heartbeat and maintenance, and recovery of abandoned jobs."""
        if time.monotonic() - self._housekept < HOUSEKEEPING_EVERY_S:
            return
        self.heartbeat()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        recover_abandoned(self.connection)
        self._housekept = time.monotonic()

    def _fetch(self, queue_key: str, job_id: str) -> tuple[Job, Queue] | None:
        """The job behind an id just taken; a deleted or unreadable one leaves the list."""
        try:
            job = self.job_class.fetch(
                job_id, connection=self.connection, serializer=self.serializer
            )
        except (NoSuchJobError, DeserializationError) as exc:
            log.warning("job_dropped", job_id=job_id, reason=str(exc) or type(exc).__name__)
            self.connection.lrem(reliable.PROCESSING_KEY.format(self.name), 1, job_id)
            return None
        name = job.origin if not queue_key else queue_key.removeprefix(reliable.RQ_QUEUE_PREFIX)
        queue = self.queue_class(
            name, connection=self.connection, job_class=self.job_class, serializer=self.serializer
        )
        return job, queue

    def prepare_execution(self, job: Any) -> Any:
        """Register the execution, mark the job STARTED and take it out of the processing list,
        in one transaction: the job moves from our list to the started registry atomically."""
        with self.connection.pipeline() as pipeline:
            execution = Execution.create(
                job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name
            )
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            job.set_status(JobStatus.STARTED, pipeline=pipeline)
            reliable.started(pipeline, self.name, job.id)
            pipeline.execute()
        self.executions[execution.id] = execution
        return execution

    # -- running jobs ---------------------------------------------------------------------
    def execute_job(self, job: Any, queue: Any) -> Any:
        if self._stop_requested:
            return  # the job stays in our list; register_death puts it back
        with paused():  # a group's jobs, answers and script arguments are trees of objects
            group = self.before_execution(job, queue)
            if self._stop_requested:
                return
            if group and self._finish_group(job, group, queue):
                self._set_idle()
                return
        try:
            execution = self.prepare_execution(job)
        except ResponseError as exc:
            if not redis_out_of_memory(exc):
                raise
            self._redis_trouble_wait(exc)  # the job stays in our list and is taken again
            return
        breaches = job_contract_breaches(job, self.job_functions, self.max_retries)
        if breaches:
            self.refuse(job, queue, execution, breaches)
            return
        done = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True
        )
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                raise
            # The result could not be written: the job stays started, its heartbeat expires and
            # it is retried once Redis takes writes again.  The worker itself carries on.
            log.error("job_result_not_saved", job_id=job.id, reason=str(exc))
            self._redis_trouble_wait(exc)
        finally:
            done.set()
            beat.join()
        self._set_idle()

    def before_execution(self, job: Any, queue: Any = None) -> Sequence[Any]:
        """Hook between taking a job and registering it (the service reloads the model and
        batches waiting jobs here).  Returns the jobs, ``job`` among them, taken ahead to be
        finished together (``worker.together``), or nothing."""
        return ()

    def admissible(self, job: Any) -> bool:
        """Whether a job is within our contract (``job_contract_breaches``)."""
        return not job_contract_breaches(job, self.job_functions, self.max_retries)

    def _finish_group(self, job: Any, group: Sequence[Any], queue: Any) -> bool:
        """Finish a group in one transaction; True if ``job`` was among those finished."""
        try:
            return job.id in finish_together(self, group, queue)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                raise
            self._redis_trouble_wait(exc)  # every job is still in our list: taken again
            return False

    def observe_wait(self, job: Any, queue: Any) -> None:
        """How long the job waited in its queue (``worker.metrics``)."""
        if job.enqueued_at is not None:
            waited = (datetime.now(UTC) - job.enqueued_at.replace(tzinfo=UTC)).total_seconds()
            metrics.WAIT_SECONDS.labels(queue.name).observe(max(0.0, waited))

    def count_outcome(self, queue: Any, finished: bool) -> None:
        metrics.JOBS.labels(queue.name, "finished" if finished else "failed").inc()

    def perform_job(self, job: Any, queue: Any, execution: Any) -> bool:
        """RQ's, counted: queue wait before it, outcome after it."""
        self.observe_wait(job, queue)
        finished = bool(super().perform_job(job, queue, execution))
        self.count_outcome(queue, finished)
        return finished

    def idle(self) -> None:
        """Hook called at least every ``BLOCK_S`` while the worker waits for a job."""

    def refuse(self, job: Any, queue: Any, execution: Any, breaches: list[str]) -> None:
        """Fail a job outside our contract without running it, its callbacks or webhooks, and
        without a retry."""
        reason = "refused: " + "; ".join(breaches)
        log.error(
            "job_refused", job_id=job.id, function=job.func_name, queue=queue.name, why=breaches
        )
        disarm(job)
        metrics.JOBS.labels(queue.name, "refused").inc()
        metrics.ERRORS.labels("refused_job").inc()
        self.handle_job_failure(
            job, queue, queue.started_job_registry, exc_string=reason, execution=execution
        )
        self._set_idle()

    def handle_job_success(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> None:
        self._refresh_retention(job)
        super().handle_job_success(job, queue, *args, **kwargs)

    def handle_job_failure(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> None:
        self._refresh_retention(job)
        super().handle_job_failure(job, queue, *args, **kwargs)

    def _refresh_retention(self, job: Any) -> None:
        """A producer that came to share this job while it ran may have raised its retention
        (``shared.queues.share_jobs``): keep the answer that long."""
        try:
            raw = self.connection.hmget(job.key, "result_ttl", "failure_ttl")
        except RedisError:
            return
        for name, value in zip(("result_ttl", "failure_ttl"), raw, strict=True):
            ours = getattr(job, name)
            if value is not None and ours is not None and ours != -1:
                setattr(job, name, max(ours, int(value)))

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check of ``rq suspend`` at the top of its loop (it writes the heartbeat in the
        same transaction): a full or absent Redis is waited out here, not a reason to quit."""
        while True:
            try:
                super().check_for_suspension(burst)
                return
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                    raise
                self._redis_trouble_wait(exc)
                if self._stop_requested:
                    return

    def run_maintenance_tasks(self) -> None:
        """RQ's registry cleaning (top of its loop): skipped, not fatal, while Redis refuses."""
        try:
            super().run_maintenance_tasks()
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                raise
            log.warning("maintenance_failed", reason=str(exc))

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        """RQ's heartbeat (also called by its work loop after every job), tolerating a Redis
        that refuses writes or is away: the worker carries on and the next one succeeds."""
        try:
            super().heartbeat(*args, **kwargs)
            metrics.heartbeat()
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                raise
            log.warning("heartbeat_failed", reason=str(exc))

    def _set_idle(self) -> None:
        """Mark the worker idle; a Redis that refuses the write (full, away) is waited out by
        the loop, not a reason to quit (the state is cosmetic: ``rq info``)."""
        try:
            self.set_state(WorkerStatus.IDLE)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not redis_out_of_memory(exc):
                raise
            self._redis_trouble_wait(exc)

    def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_EVERY_S):
            try:
                reliable.keep_alive(self.connection, self.name, HEARTBEAT_TTL_S)
                self.maintain_heartbeats(job, execution)
                metrics.heartbeat()
            except RedisError as exc:  # Redis away: the job itself will notice
                log.warning("heartbeat_failed", job_id=job.id, reason=str(exc))

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_S

    # -- stopping, and Redis trouble --------------------------------------------------------
    def _shutdown(self) -> None:
        """Warm shutdown (first SIGTERM/SIGINT): set a flag, raise nothing.  The loop stops at
        its next safe point: between two takes (at most ``BLOCK_S``), before a taken job is
        registered (it goes back in ``register_death``), or after the running job.  RQ's version
        asks Redis for the worker's state from inside the signal handler, and raises
        ``StopRequested`` wherever the signal lands: inside a connection pool's lock or a
        transaction, from where the teardown can block for good (a SIGTERMed worker was seen
        running on).  The second signal is RQ's cold shutdown."""
        self._stop_requested = True

    def subscribe(self) -> None:
        """RQ's command channel (``rq`` kill/stop commands), listened to by a thread that wakes
        every ``PUBSUB_WAKE_S``.  RQ's thread waits up to 60 s for a message, and with redis-py
        >= 8 its teardown's ``stop()`` joins that thread: a worker whose thread had already
        read the unsubscribe reply sat in its teardown for up to a minute after SIGTERM."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_WAKE_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def register_death(self) -> None:
        """Put back what we took but did not start, then deregister (RQ's)."""
        try:
            moved = reliable.release(self.connection, self.name)
            if moved:
                log.info("jobs_released", jobs=moved)
        except RedisError as exc:  # another worker recovers them once our liveness key expires
            log.warning("jobs_release_failed", reason=str(exc))
        try:
            super().register_death()
        except RedisError as exc:  # the worker's keys expire on their own
            log.warning("deregistration_failed", reason=str(exc))

    def _redis_trouble_wait(self, exc: BaseException) -> None:
        """One log line per episode, then a growing pause (the loop retries)."""
        kind = "out_of_memory" if redis_out_of_memory(exc) else "unreachable"
        if self._redis_trouble != kind:
            event = "redis_out_of_memory" if kind == "out_of_memory" else "redis_unreachable"
            log.error(event, reason=str(exc), action="keeping every job where it is; waiting")
            self._redis_trouble = kind
            self._backoff = BACKOFF_S[0]
        deadline = time.monotonic() + self._backoff
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(0.05)
        self._backoff = min(self._backoff * 2, BACKOFF_S[1])

    def _redis_recovered(self) -> None:
        if self._redis_trouble is not None:
            log.info("redis_recovered", was=self._redis_trouble)
            self._redis_trouble = None
