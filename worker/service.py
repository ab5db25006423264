"""The RQ worker class of the service: ``ReliableWorker`` plus the model.

Between taking a job and registering it, the worker swaps in a newly loaded model version if
the background watcher has one ready (``worker.reload``), and tells Redis which version it
serves (``announce``), so ``/model`` in the bot and ``sentiment-models`` can show it.
"""

from __future__ import annotations

from typing import Any

import structlog
from redis.exceptions import RedisError

from shared.queues import announce_model
from worker import jobs
from worker.reliable import ReliableWorker

log = structlog.get_logger(__name__)


class ReloadingWorker(ReliableWorker):
    """ReliableWorker that hot-reloads the model between jobs and announces what it serves."""

    def before_execution(self, job: Any) -> None:
        if jobs.serving().maybe_reload():
            self.announce()

    def announce(self) -> None:
        """Tell Redis which version this worker serves (best effort)."""
        try:
            announce_model(self.connection, {**jobs.serving().get().info(), "worker": self.name})
        except RedisError as exc:
            log.warning("model_announce_failed", reason=str(exc))
