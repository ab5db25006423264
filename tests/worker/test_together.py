"""Jobs answered together are finished together (``worker.together``): one transaction moves
the group from the worker's processing list to finished, and a job that cannot be finished
there stays in the list and takes RQ's own path alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from shared import reliable
from shared.local import RedisServer
from shared.queues import QUEUE_INTERACTIVE, WORKER_QUEUES, get_queue
from tests.light_worker import EXECUTIONS, JOB
from worker.reliable import ReliableWorker
from worker.together import finish_together

FAILING = "operator.truediv"
PURE = "operator.add"  # writes nothing to Redis itself


class GroupWorker(ReliableWorker):
    job_functions = frozenset({JOB, FAILING, PURE})


def _worker(conn: Redis, name: str) -> GroupWorker:
    queues = [get_queue(q, conn) for q in WORKER_QUEUES]
    return GroupWorker(queues, connection=conn, serializer=JSONSerializer, name=name)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A real redis-server (the failure test needs its ``maxmemory``)."""
    with RedisServer.temporary() as server:
        yield server


@pytest.fixture
def conn(server: RedisServer) -> Iterator[Redis]:
    conn = Redis.from_url(server.url)
    conn.flushall()
    yield conn
    conn.config_set("maxmemory", 0)


def _setup(conn: Redis) -> tuple[GroupWorker, Any, list[Job]]:
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    jobs = [
        queue.enqueue(JOB, "one", result_ttl=60),
        queue.enqueue(FAILING, 1, 0),  # raises ZeroDivisionError
        queue.enqueue("os.system", "true"),  # outside the contract
        queue.enqueue(JOB, "two", result_ttl=60),
        queue.enqueue(JOB, "three"),  # deleted while it waits in the worker's list
    ]
    worker = _worker(conn, "g")
    worker.register_birth()
    assert len(reliable.take_more(conn, "g", queue.key, 10)) == len(jobs)
    fetched = Job.fetch_many([j.id for j in jobs], connection=conn, serializer=JSONSerializer)
    jobs[4].delete(remove_from_queue=False)
    return worker, queue, [j for j in fetched if j is not None]


def test_a_group_is_finished_in_one_step_and_the_rest_is_left_in_the_list(conn: Redis) -> None:
    worker, queue, jobs = _setup(conn)
    one, failing, foreign, two, gone = jobs
    conn.hset(one.key, "result_ttl", 600)  # a producer raised its retention while it waited
    assert finish_together(worker, jobs, queue) == {one.id, two.id}
    for job, value in ((one, "one"), (two, "two")):
        job = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
        assert job.get_status() == JobStatus.FINISHED
        assert job.latest_result().return_value == value
        assert job.worker_name == "g"
        assert job.started_at is not None and job.ended_at >= job.started_at
    assert 590 < conn.ttl(one.key) <= 600
    assert set(FinishedJobRegistry(QUEUE_INTERACTIVE, connection=conn).get_job_ids()) == {
        one.id,
        two.id,
    }
    assert conn.lrange(EXECUTIONS, 0, -1) == [one.id.encode(), two.id.encode()]
    left = [i.decode() for i in conn.lrange(reliable.PROCESSING_KEY.format("g"), 0, -1)]
    assert left == [failing.id, foreign.id, gone.id]
    assert int(conn.hget(worker.key, "successful_job_count")) == 2
    # What was left runs alone: the failure with its own error, the foreign job refused (here
    # "g" dies and another worker recovers its list; the deleted job is dropped).
    worker.register_death()
    _worker(conn, "h").work(burst=True)
    failed = FailedJobRegistry(QUEUE_INTERACTIVE, connection=conn, serializer=JSONSerializer)
    assert set(failed.get_job_ids()) == {failing.id, foreign.id}
    assert "ZeroDivisionError" in failing.latest_result().exc_string
    assert "refused" in foreign.latest_result().exc_string
    assert conn.llen(reliable.PROCESSING_KEY.format("g")) == 0


def test_nothing_is_finished_when_the_transaction_fails(conn: Redis) -> None:
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    jobs = [queue.enqueue(PURE, i, 1) for i in range(3)]
    worker = _worker(conn, "f")
    worker.register_birth()
    reliable.take_more(conn, "f", queue.key, 10)
    conn.config_set("maxmemory", 1)  # every write refused from here on
    conn.config_set("maxmemory-policy", "noeviction")
    with pytest.raises(Exception, match="maxmemory"):
        finish_together(worker, jobs, queue)
    conn.config_set("maxmemory", 0)
    assert conn.lrange(reliable.PROCESSING_KEY.format("f"), 0, -1) == [j.id.encode() for j in jobs]
    assert all(j.get_status(refresh=True) == JobStatus.QUEUED for j in jobs)
    assert finish_together(worker, jobs, queue) == {j.id for j in jobs}  # Redis is back
    assert [j.latest_result().return_value for j in jobs] == [1, 2, 3]


def test_a_job_finished_together_looks_like_one_rq_finished(conn: Redis) -> None:
    """Same fields, result stream entry, registry and retention as RQ's own success handling
    writes (what this module couples to: rq is pinned, and this test says when it drifts)."""
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    ours, theirs = (queue.enqueue(PURE, 2, 3, result_ttl=300) for _ in range(2))
    worker = _worker(conn, "c")
    worker.register_birth()
    reliable.take_more(conn, "c", queue.key, 1)
    assert finish_together(worker, [ours], queue) == {ours.id}
    worker.register_death()
    _worker(conn, "r").work(burst=True)  # RQ's path for the other
    ours_hash, theirs_hash = conn.hgetall(ours.key), conn.hgetall(theirs.key)
    assert ours_hash.keys() == theirs_hash.keys()
    for field in (b"status", b"result_ttl", b"origin", b"data"):
        assert ours_hash[field] == theirs_hash[field], field
    fetched = [Job.fetch(j.id, connection=conn, serializer=JSONSerializer) for j in (ours, theirs)]
    for job in fetched:
        assert job.get_status() == JobStatus.FINISHED
        assert job.return_value() == 5
        assert job.started_at is not None and job.ended_at is not None
        assert 290 < conn.ttl(job.key) <= 300
        assert 290 < conn.ttl(f"rq:results:{job.id}") <= 300
    entries = [conn.xrange(f"rq:results:{j.id}") for j in (ours, theirs)]
    assert [len(e) for e in entries] == [1, 1]
    # No execution record: a group's jobs are never registered as started.
    assert entries[0][0][1].keys() == entries[1][0][1].keys() - {b"execution_id"}
    registry = FinishedJobRegistry(QUEUE_INTERACTIVE, connection=conn)
    assert set(registry.get_job_ids()) == {ours.id, theirs.id}


def test_a_job_cancelled_deleted_or_recovered_while_its_group_ran_is_left_alone(
    conn: Redis,
) -> None:
    """The script re-checks each job: still queued, still in this worker's list."""
    from shared.reuse import CANCEL_SCRIPT, SHARED_FIELD, cancel_keys

    queue = get_queue(QUEUE_INTERACTIVE, conn)
    jobs = [queue.enqueue(PURE, i, 1, result_ttl=60) for i in range(4)]
    worker = _worker(conn, "k")
    worker.register_birth()
    reliable.take_more(conn, "k", queue.key, 10)
    fetched = Job.fetch_many([j.id for j in jobs], connection=conn, serializer=JSONSerializer)
    kept, cancelled, deleted, recovered = (j for j in fetched if j is not None)
    original = Job.perform

    def perform(job: Job) -> Any:  # while the group runs, after the statuses were read
        if job.id == kept.id:
            keys = cancel_keys(cancelled.id, QUEUE_INTERACTIVE)
            conn.eval(CANCEL_SCRIPT, len(keys), *keys, cancelled.id, SHARED_FIELD)
            conn.delete(deleted.key)
            conn.lrem(reliable.PROCESSING_KEY.format("k"), 1, recovered.id)
            conn.rpush(queue.key, recovered.id)  # another worker's recovery
        return original(job)

    Job.perform = perform  # type: ignore[method-assign]
    try:
        assert finish_together(worker, [kept, cancelled, deleted, recovered], queue) == {kept.id}
    finally:
        Job.perform = original  # type: ignore[method-assign]
    assert not conn.exists(deleted.key) and not conn.exists(f"rq:results:{deleted.id}")
    assert conn.hget(recovered.key, "status") == b"queued"
    assert conn.lrange(queue.key, 0, -1) == [recovered.id.encode()]
    assert conn.xlen(f"rq:results:{recovered.id}") == 0
    registry = FinishedJobRegistry(QUEUE_INTERACTIVE, connection=conn)
    assert registry.get_job_ids() == [kept.id]
    assert int(conn.hget(worker.key, "successful_job_count")) == 1
