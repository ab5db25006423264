"""Reliable delivery with fakeredis and in-process workers: the take -> register window, dead and
stopped workers, foreign job functions, and decisions on Redis's clock.

The same properties under real signals and a real redis-server are in ``test_delivery.py``.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from shared import reliable
from shared.local import RedisServer
from shared.queues import (
    QUEUE_BULK,
    QUEUE_INTERACTIVE,
    WORKER_QUEUES,
    enqueue_payloads,
    get_queue,
    recover_abandoned,
)
from shared.schema import make_payload
from worker.reliable import ReliableWorker


class SleepyWorker(ReliableWorker):
    """Runs ``time.sleep`` jobs too: a stand-in job that takes as long as the test needs."""

    job_functions = ReliableWorker.job_functions | {"time.sleep"}


def queues(conn: Any) -> list[Queue]:
    return [get_queue(q, conn) for q in WORKER_QUEUES]


def test_a_taken_job_is_in_the_processing_list_until_registration_moves_it(conn: Any) -> None:
    bulk = get_queue(QUEUE_BULK, conn)
    job = bulk.enqueue("time.sleep", 0.0)
    worker = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="w1")
    taken, queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
    processing = reliable.PROCESSING_KEY.format("w1")
    assert (taken.id, queue.name) == (job.id, QUEUE_BULK)
    assert conn.lrange(processing, 0, -1) == [job.id.encode()] and bulk.count == 0
    worker.prepare_execution(taken)
    registry = StartedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    assert conn.llen(processing) == 0 and registry.get_job_ids(cleanup=False) == [job.id]
    assert taken.get_status(refresh=True).value == "started"


def test_interactive_jobs_are_taken_before_bulk_ones(conn: Any) -> None:
    bulk = get_queue(QUEUE_BULK, conn).enqueue("time.sleep", 0.0)
    chat = get_queue(QUEUE_INTERACTIVE, conn).enqueue("time.sleep", 0.0)
    worker = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="w")
    assert worker.dequeue_job_and_maintain_ttl(timeout=None)[0].id == chat.id
    worker.prepare_execution(Job.fetch(chat.id, connection=conn, serializer=JSONSerializer))
    assert worker.dequeue_job_and_maintain_ttl(timeout=None)[0].id == bulk.id


def test_a_worker_that_dies_after_taking_loses_nothing(conn: Any) -> None:
    """Killed between the take and the registration: back at the front of its queue."""
    bulk = get_queue(QUEUE_BULK, conn)
    first, second = bulk.enqueue("time.sleep", 0.0), bulk.enqueue("time.sleep", 0.0)
    victim = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="v")
    victim.dequeue_job_and_maintain_ttl(timeout=1)  # ... and SIGKILL here
    assert bulk.get_job_ids() == [second.id]
    recover_abandoned(conn)  # its liveness key still lives: nothing moves yet
    assert bulk.get_job_ids() == [second.id]
    conn.delete(reliable.ALIVE_KEY.format("v"))  # what Redis does when the TTL runs out
    recover_abandoned(conn)
    assert bulk.get_job_ids() == [first.id, second.id]  # the taken one first, as it was
    survivor = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer)
    survivor.work(burst=True)
    assert {j.get_status(refresh=True).value for j in (first, second)} == {"finished"}


def test_a_worker_stopped_after_taking_puts_the_job_back(conn: Any) -> None:
    """SIGTERM after a take: the job is not started; teardown releases what was taken."""
    bulk = get_queue(QUEUE_BULK, conn)
    job = bulk.enqueue("time.sleep", 0.0)
    worker = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="s")
    worker.register_birth()
    worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.register_death()  # what work() does on its way out
    assert bulk.get_job_ids() == [job.id]
    assert conn.llen(reliable.PROCESSING_KEY.format("s")) == 0


def test_a_stop_signal_raises_nothing_and_the_taken_job_is_not_started(conn: Any) -> None:
    """The warm-shutdown handler only sets a flag (an exception raised wherever the signal lands
    can leave a lock held); a job taken before it goes back instead of running."""
    bulk = get_queue(QUEUE_BULK, conn)
    job = bulk.enqueue("time.sleep", 0.0)
    worker = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="t")
    worker.register_birth()
    taken = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.request_stop(signal.SIGTERM, None)  # what the SIGTERM handler runs
    worker.execute_job(*taken)
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert worker.dequeue_job_and_maintain_ttl(timeout=1) is None
    worker.register_death()
    assert bulk.get_job_ids() == [job.id]


def test_a_deleted_job_in_the_processing_list_is_dropped(conn: Any) -> None:
    bulk = get_queue(QUEUE_BULK, conn)
    gone, kept = bulk.enqueue("time.sleep", 0.0), bulk.enqueue("time.sleep", 0.0)
    worker = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="d")
    conn.lmove(bulk.key, reliable.PROCESSING_KEY.format("d"), "LEFT", "RIGHT")
    gone.delete(remove_from_queue=False)
    assert worker.dequeue_job_and_maintain_ttl(timeout=1)[0].id == kept.id


@pytest.mark.parametrize("queue_name", WORKER_QUEUES)
def test_a_foreign_job_function_runs_nothing_and_the_worker_goes_on(
    conn: Any, serving: Any, tmp_path: Path, queue_name: str
) -> None:
    from worker.service import ReloadingWorker

    marker = tmp_path / "pwned"
    queue = get_queue(queue_name, conn)
    foreign = queue.enqueue("os.system", f"touch {marker}", retry=Retry(max=2))
    (review,) = enqueue_payloads(queue, [make_payload([("r", "A superb film")])])
    ReloadingWorker(queues(conn), connection=conn, serializer=JSONSerializer).work(burst=True)
    assert not marker.exists()
    failed = FailedJobRegistry(queue_name, connection=conn, serializer=JSONSerializer)
    assert failed.get_job_ids() == [foreign.id]  # failed at once: no retry of a refusal
    assert "refused" in foreign.latest_result().exc_string
    answer = Job.fetch(review, connection=conn, serializer=JSONSerializer).latest_result()
    assert answer.return_value["results"][0]["label"] in ("positive", "negative")


@pytest.fixture(scope="module")
def real_redis() -> Iterator[Redis]:
    """A real redis-server: its clock is not this process's (fakeredis's TIME would be)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    with RedisServer.temporary() as server:
        yield Redis.from_url(server.url)


@pytest.mark.redis_server
def test_recovery_judges_heartbeats_on_the_redis_clock(
    real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer whose clock runs 16 s ahead must not take a running job for abandoned."""
    import rq.registry
    import rq.utils

    conn = real_redis
    conn.flushdb()
    bulk = get_queue(QUEUE_BULK, conn)
    job = bulk.enqueue("time.sleep", 0.0, retry=Retry(max=2))
    worker = SleepyWorker([bulk], connection=conn, serializer=JSONSerializer, name="busy")
    worker.clock.install()
    taken, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.prepare_execution(taken)  # running, with a 15 s heartbeat on Redis's clock
    registry = StartedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    ahead = int(time.time()) + 16  # this host's clock, as RQ reads it by default
    for module in (rq.utils, rq.registry):
        monkeypatch.setattr(module, "current_timestamp", lambda: ahead)
    recover_abandoned(conn)
    assert registry.get_job_ids(cleanup=False) == [job.id]
    assert job.get_status(refresh=True).value == "started"  # not retried, not failed
    registry.cleanup()  # RQ's own cleanup, on this host's clock, would have retried it
    assert job.get_status(refresh=True).value == "queued"


@pytest.mark.redis_server
def test_a_worker_with_a_slow_clock_writes_heartbeats_on_the_redis_clock(
    real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = real_redis
    conn.flushdb()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 16)  # this host is 16 s behind
    worker = SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer, name="slow")
    worker.clock.install()
    get_queue(QUEUE_BULK, conn).enqueue("time.sleep", 0.0)
    taken, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    before = reliable.redis_time(conn)
    worker.prepare_execution(taken)
    after = reliable.redis_time(conn)
    registry = StartedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    ((_, score),) = conn.zrange(registry.key, 0, -1, withscores=True)
    # Redis's clock when the job was registered, plus the TTL (RQ rounds to whole seconds);
    # on this host's clock the score would be 16 s earlier.
    ttl = reliable.ALIVE_TTL_S
    assert int(before) + ttl - 1 <= score <= after + ttl + 1


def test_a_long_job_keeps_its_heartbeat_and_is_not_taken_for_abandoned(
    conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat thread keeps a running job alive in the started registry past its TTL."""
    import threading

    import worker.reliable

    monkeypatch.setattr(worker.reliable, "HEARTBEAT_EVERY_S", 0.2)
    # RQ scores registry entries in whole seconds, so a TTL of N s means N-1 to N s.
    monkeypatch.setattr(worker.reliable, "HEARTBEAT_TTL_S", 3)
    queue = get_queue(QUEUE_BULK, conn)
    job = queue.enqueue("time.sleep", 6.0)
    registry = StartedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    expired_during_run: list[list[str]] = []

    def clean_while_running() -> None:
        deadline = time.monotonic() + 60
        while job.get_status(refresh=True).value != "started" and time.monotonic() < deadline:
            time.sleep(0.01)  # the worker starts (imports, registers) at its own pace
        time.sleep(4.0)  # past the 3 s TTL: only heartbeats keep the job there
        recover_abandoned(conn)
        expired_during_run.append(registry.get_job_ids())

    cleaner = threading.Thread(target=clean_while_running)
    cleaner.start()
    SleepyWorker(queues(conn), connection=conn, serializer=JSONSerializer).work(burst=True)
    cleaner.join()
    assert expired_during_run == [[job.id]]  # still registered as running, not abandoned
    assert job.get_status(refresh=True).value == "finished"
    assert FailedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer).count == 0


def test_a_worker_killed_after_registering_a_job_loses_nothing(conn: Any) -> None:
    """Registered and STARTED in one transaction: once the heartbeat expires, it is retried."""
    queue = get_queue(QUEUE_BULK, conn)
    job = queue.enqueue("time.sleep", 0.0, retry=Retry(max=2))
    worker = SleepyWorker([queue], connection=conn, serializer=JSONSerializer)
    dequeued, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.prepare_execution(dequeued)  # ... and the process dies here (SIGKILL)
    registry = StartedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    assert registry.get_job_ids(cleanup=False) == [job.id]
    registry.cleanup(timestamp=time.time() + 3600)  # long after its heartbeat expired
    assert job.get_status(refresh=True).value == "queued"  # retried, not dropped
    assert queue.get_job_ids() == [job.id]
    SleepyWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True)
    assert job.get_status(refresh=True).value == "finished"


@pytest.mark.redis_server
def test_a_worker_leaves_its_command_channel_at_once(real_redis: Redis) -> None:
    """Teardown's last step: with RQ's listener (a 60 s wait) and redis-py >= 8 (``stop()``
    joins the thread), a worker whose listener had already read the unsubscribe reply sat in
    its teardown for up to a minute after SIGTERM; this is that race, made certain."""
    worker = SleepyWorker(
        queues(real_redis), connection=real_redis, serializer=JSONSerializer, name="pubsub"
    )
    worker.subscribe()
    worker.pubsub.unsubscribe()
    deadline = time.monotonic() + 10
    while worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.pubsub.subscribed  # the listener read the reply and waits again
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 10  # RQ's own listener: up to 60 s
    assert not worker.pubsub_thread.is_alive()
