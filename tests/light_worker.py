"""A worker process with our delivery core and no model: ``python -m tests.light_worker NAME``.

It runs ``ReliableWorker`` (what every service worker runs) on both queues, executing
``tests.light_worker.record`` jobs, which note each execution in Redis.  It starts in a fraction
of a second (no TensorFlow), so a test can kill and replace hundreds of them.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from rq.job import Job
from rq.serializers import JSONSerializer

from shared import reliable
from shared.queues import QUEUE_INTERACTIVE, WORKER_QUEUES, connect, get_queue
from worker.reliable import ReliableWorker

JOB = "tests.light_worker.record"
PAUSE = "tests.light_worker.pause"
EXECUTIONS = "test:executions"
#: Interactive jobs taken ahead of each one (the service batches up to WORKER_BATCH_JOBS).
TAKE_AHEAD = 7


def record(token: str) -> str:
    """The job: append its id to a Redis list (every execution, duplicates included)."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.connection.rpush(EXECUTIONS, job.id)
    time.sleep(random.uniform(0, 0.01))
    return token


def pause(seconds: float) -> float:
    """A job that takes a while (to be caught running)."""
    time.sleep(seconds)
    return seconds


class LightWorker(ReliableWorker):
    """ReliableWorker running the test job, with a random pause where the service reloads."""

    job_functions = frozenset({JOB, PAUSE})
    max_retries = 50  # the delivery test's jobs outlive hundreds of kills

    def before_execution(self, job: Any, queue: Any = None) -> Sequence[Any]:
        time.sleep(random.uniform(0, 0.005))  # widen the take -> register window
        if queue is None or queue.name != QUEUE_INTERACTIVE:
            return ()
        # Take waiting jobs ahead and finish them together, as the service's batching does
        # (worker.batching, worker.together): every kill must find them safe.
        taken = reliable.take_more(self.connection, self.name, queue.key, TAKE_AHEAD)
        fetched = Job.fetch_many(taken, connection=self.connection, serializer=self.serializer)
        return [job, *(j for j in fetched if j is not None)]


def main() -> int:
    conn = connect(os.environ["REDIS_URL"])
    queues = [get_queue(q, conn) for q in WORKER_QUEUES]
    LightWorker(queues, connection=conn, serializer=JSONSerializer, name=sys.argv[1]).work()
    return 0


if __name__ == "__main__":
    sys.exit(main())
