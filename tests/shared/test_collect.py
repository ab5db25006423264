"""``shared.queues.collect``: every job gets its outcome as it ends, in whatever order jobs end,
while the oldest is still running (the poll watches only the oldest between full looks)."""

from __future__ import annotations

import threading
import time

import fakeredis
from rq import Queue
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from shared.queues import FULL_POLL_S, collect


def test_jobs_that_end_behind_a_running_one_are_collected_at_once_and_not_timed_out() -> None:
    conn = fakeredis.FakeRedis()
    queue = Queue("q", connection=conn, serializer=JSONSerializer)
    oldest, *later = [queue.enqueue("operator.add", i, 1) for i in range(4)]
    seen: dict[str, float] = {}

    def end_later() -> None:
        time.sleep(0.3)
        for job in later:
            job.set_status(JobStatus.FAILED)
            Result.create_failure(job, ttl=60, exc_string="ValueError: broken")

    threading.Thread(target=end_later).start()
    started = time.monotonic()
    outcomes = collect(
        conn,
        [oldest.id, *(j.id for j in later)],
        timeout=2.0,
        poll=0.01,
        on_done=lambda o: seen.setdefault(o.job_id, time.monotonic() - started),
    )
    assert outcomes[oldest.id].error == "timed out waiting for a worker"
    for job in later:
        assert outcomes[job.id].error is not None and "broken" in outcomes[job.id].error
        # seen within a full look of their end, long before the deadline
        assert seen[job.id] < 0.3 + FULL_POLL_S + 0.5
