"""The RQ worker class of the service: ``ReliableWorker`` plus the model.

Between taking a job and registering it, the worker swaps in a newly loaded model version if
the background watcher has one ready (``worker.reload``), and tells Redis which version it
serves (``announce``), so ``/model`` in the bot and ``sentiment-models`` can show it; and it
answers the interactive jobs waiting behind the job in one forward pass (``worker.batching``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from shared.announcements import announce_model
from worker import jobs, metrics
from worker.batching import Batcher, batch_jobs_setting
from worker.model.served import explain_reviews
from worker.reliable import ReliableWorker

log = structlog.get_logger(__name__)


class ReloadingWorker(ReliableWorker):
    """ReliableWorker that hot-reloads the model between jobs and announces what it serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batcher = Batcher(
            self.connection,
            self.name,
            self.serializer,
            self.admissible,
            batch_jobs_setting(),
        )
        jobs.BATCHER = self.batcher

    def before_execution(self, job: Any, queue: Any = None) -> Sequence[Any]:
        if jobs.serving().maybe_reload():
            self.batcher.clear()  # answers of the old version are not given out
            self.announce()
        if job is None or queue is None:
            return ()
        try:
            return self.batcher.prepare(job, queue, jobs.serving().get(), explain_reviews)
        except RedisError as exc:  # the jobs run one by one
            log.warning("batch_take_failed", reason=str(exc))
            return ()

    def idle(self) -> None:
        """While waiting for jobs: swap in a version the watcher made ready, and say so at once
        (producers key their jobs by the announced version: an idle worker must not keep them
        on the old one until its next job)."""
        self.before_execution(None)

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        """A failed job: counted by exception class, then RQ's handling."""
        metrics.ERRORS.labels(f"job_{exc_info[0].__name__}" if exc_info else "job_failed").inc()
        super().handle_exception(job, *exc_info)

    def announce(self) -> None:
        """Tell Redis which version this worker serves (best effort)."""
        try:
            announce_model(self.connection, {**jobs.serving().get().info(), "worker": self.name})
        except RedisError as exc:
            log.warning("model_announce_failed", reason=str(exc))
