"""The RQ worker class: a ``SimpleWorker`` that hot-reloads the model and keeps its heartbeat.

No fork per job (TensorFlow is not fork-safe, and loading per job costs seconds): the model is
loaded once per process, checked between jobs (``worker.reload``), and a background thread
refreshes the heartbeat while a job runs, so a killed worker's job is retried quickly.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import JobStatus
from rq.worker import WorkerStatus

from shared.queues import announce_model
from worker import jobs

log = structlog.get_logger(__name__)

#: A SimpleWorker runs the job in its own thread, so nothing refreshes its heartbeat while a
#: job runs; ours does, from a background thread every HEARTBEAT_EVERY_S, with a short TTL.  A
#: SIGKILLed worker's job then expires from the started registry within HEARTBEAT_TTL_S and is
#: retried by another worker (instead of after the whole job timeout).
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = 15


class ReloadingWorker(SimpleWorker):  # type: ignore[misc]
    """SimpleWorker that hot-reloads the model between jobs and beats while a job runs."""

    def execute_job(self, job: Any, queue: Any) -> Any:
        """Swap in a newly loaded model, then run the job with the heartbeat thread."""
        if jobs.serving().maybe_reload():
            self.announce()
        execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True
        )
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def prepare_execution(self, job: Any) -> Any:
        """RQ's, plus the job's STARTED status in the same transaction.

        RQ registers the execution first and sets STARTED later, in perform_job; a worker
        killed in between leaves a registry entry whose job is still "queued", and the
        registry's cleanup then drops it without a retry: the job is lost.  Written together,
        an abandoned job is always retried.  The job also leaves the intermediate queue here,
        so only the started registry is responsible for it.
        """
        with self.connection.pipeline() as pipeline:
            execution = Execution.create(
                job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name
            )
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            job.set_status(JobStatus.STARTED, pipeline=pipeline)
            queue = Queue(job.origin, connection=self.connection)
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        return execution

    def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_EVERY_S):
            try:
                self.maintain_heartbeats(job, execution)
            except RedisError as exc:  # Redis away: the job itself will notice
                log.warning("heartbeat_failed", job_id=job.id, reason=str(exc))

    def announce(self) -> None:
        """Tell Redis which version this worker serves (best effort)."""
        try:
            announce_model(self.connection, {**jobs.serving().get().info(), "worker": self.name})
        except RedisError as exc:
            log.warning("model_announce_failed", reason=str(exc))

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_S
