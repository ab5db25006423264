"""Jobs answered together are finished together: one Redis transaction for a whole group.

RQ finishes a job with about thirty Redis round trips (status writes, the started registry, an
execution record, the result stream, the finished registry, the worker's counters, each in its
own call or transaction).  For a one-review chat job that bookkeeping costs several times the
forward pass.  When a worker has taken a group of waiting jobs ahead (``worker.batching``), it
runs each job's function (answers come from the group's pass, so this is cheap), then moves every
job that returned from its processing list to finished in **one** ``MULTI``/``EXEC``: status,
result (the stream producers wait on), finished registry, retention, the worker's counters.

Delivery is unchanged: until the ``EXEC`` every job is in the worker's processing list (a
worker killed then loses none: they are recovered and run again, as after any kill), and the
``EXEC`` moves them all at once.  A job whose function raised, or whose status changed while
it waited (cancelled, deleted), is left in the list and runs alone through RQ's own path, where
it fails or is dropped with its own error.  A job of a group is never marked ``started``: it
goes from queued to finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from rq.job import JobStatus
from rq.results import Result
from rq.utils import now, utcformat

from shared import reliable

log = structlog.get_logger(__name__)


def _retention(conn: Any, jobs: Sequence[Any]) -> list[tuple[bytes | None, bytes | None]]:
    """Each job's stored status and result TTL, read in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.hmget(job.key, "status", "result_ttl")
        return [tuple(row) for row in pipe.execute()]


def _finished(worker: Any, job: Any, value: Any, started: Any, ended: Any, pipe: Any) -> None:
    """Queue in ``pipe`` what RQ's success handling writes for ``job`` (rq 3.0's
    ``Worker.handle_job_success`` and ``Job._handle_success``), less what none of our jobs has
    (dependents, repeats, callbacks): the changed fields only, not the whole job again."""
    job.worker_name = worker.name
    job.started_at, job.ended_at, job.last_heartbeat = started, ended, ended
    job._result = value
    job._status = JobStatus.FINISHED
    ttl = job.get_result_ttl(worker.default_result_ttl)
    if ttl == 0:
        job.delete(pipeline=pipe, remove_from_queue=False)
    else:
        pipe.hset(
            job.key,
            mapping={
                "status": JobStatus.FINISHED.value,
                "worker_name": worker.name,
                "started_at": utcformat(started),
                "ended_at": utcformat(ended),
                "last_heartbeat": utcformat(ended),
            },
        )
        Result.create(
            job,
            Result.Type.SUCCESSFUL,
            ttl,
            return_value=value,
            worker_name=worker.name,
            pipeline=pipe,
            execution_started_at=started,
            execution_ended_at=ended,
        )
        job.finished_job_registry.add(job, ttl, pipe)
        if ttl > 0:
            pipe.expire(job.key, ttl)
        else:
            pipe.persist(job.key)
    reliable.started(pipe, worker.name, job.id)  # out of the processing list


def finish_together(worker: Any, jobs: Sequence[Any], queue: Any) -> set[str]:
    """Run each job's function and finish every job that returned in one transaction.

    Returns the ids finished (the others are still in the worker's processing list)."""
    conn = worker.connection
    done: list[tuple[Any, Any, Any]] = []  # job, return value, started at
    for job, (status, ttl) in zip(jobs, _retention(conn, jobs), strict=True):
        if status != JobStatus.QUEUED.value.encode() or not worker.admissible(job):
            continue  # cancelled, deleted, or outside our contract: RQ's path decides
        if ttl is not None and job.result_ttl is not None and job.result_ttl != -1:
            job.result_ttl = max(job.result_ttl, int(ttl))  # a producer may have raised it
        started = now()
        try:
            value = job.perform()
        except Exception as exc:  # it runs alone, and fails with its own error, on its turn
            log.info("group_job_left_out", job_id=job.id, reason=repr(exc)[:200])
            continue
        done.append((job, value, started))
    if not done:
        return set()
    ended = now()
    working = timedelta()
    with conn.pipeline() as pipe:  # MULTI ... EXEC
        for job, value, started in done:
            _finished(worker, job, value, started, ended, pipe)
            working += ended - started
        pipe.hincrby(worker.key, "successful_job_count", len(done))
        worker.increment_total_working_time(working, pipe)
        pipe.execute()
    for job, _, _ in done:
        worker.observe_wait(job, queue)
        worker.count_outcome(queue, finished=True)
    log.debug("group_finished", jobs=len(done), queue=queue.name, left_out=len(jobs) - len(done))
    return {job.id for job, _, _ in done}
