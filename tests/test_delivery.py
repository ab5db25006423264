"""Every enqueued job reaches a terminal state, whatever signal hits a worker, at whatever point
of its two-queue loop: real worker processes SIGKILLed and SIGTERMed at random, hundreds of
times, against a real redis-server."""

from __future__ import annotations

import collections
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared.local import RedisServer, start, stop_processes, worker_env
from shared.outcomes import DONE
from shared.queues import QUEUE_BULK, QUEUE_INTERACTIVE, get_queue
from tests.light_worker import EXECUTIONS, JOB

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]
INTERRUPTIONS = 220
WORKERS = 3


@pytest.fixture
def redis_url() -> Iterator[str]:
    with RedisServer.temporary() as server:
        yield server.url


def _enqueue(conn: Redis, n: int, offset: int) -> list[str]:
    ids = []
    for i in range(offset, offset + n):
        queue = get_queue(QUEUE_INTERACTIVE if i % 3 == 0 else QUEUE_BULK, conn)
        ids.append(queue.enqueue(JOB, str(i), retry=Retry(max=50)).id)
    return ids


def test_no_job_is_lost_over_hundreds_of_random_kills_and_stops(
    redis_url: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    conn = Redis.from_url(redis_url)
    env = worker_env(redis_url, LOG_LEVEL="WARNING")
    names = (f"w{i}" for i in range(10_000))
    spawned = 0

    def spawn() -> subprocess.Popen[bytes]:
        nonlocal spawned
        spawned += 1
        return start("tests.light_worker", [next(names)], env, tmp_path / "workers.log")

    ids = _enqueue(conn, 1500, 0)
    procs = [spawn() for _ in range(WORKERS)]
    stopped: list[subprocess.Popen[bytes]] = []  # SIGTERMed: each must exit by itself
    kills = stops = 0
    try:
        while kills + stops < INTERRUPTIONS:
            time.sleep(rng.uniform(0.03, 0.25))
            if conn.llen(f"rq:queue:{QUEUE_BULK}") < 300:  # keep jobs flowing
                ids += _enqueue(conn, 600, len(ids))
            victim = rng.randrange(WORKERS)
            if rng.random() < 0.5:
                procs[victim].kill()
                kills += 1
            else:
                procs[victim].send_signal(signal.SIGTERM)  # finishes its job, then exits
                stopped.append(procs[victim])
                stops += 1
            procs[victim] = spawn()
        # Calm: steady workers finish everything, the dead workers' jobs included (their
        # liveness keys and heartbeats expire within 15 s).
        deadline = time.monotonic() + 180
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            statuses = [Job(i, connection=conn).get_status(refresh=True) for i in pending]
            pending = [i for i, s in zip(pending, statuses, strict=True) if s not in DONE]
            time.sleep(0.5)
        # A warm shutdown ends the worker whatever it was doing when the signal came.
        lingering = []
        for proc in stopped:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                lingering.append(proc.args[-1])
        assert lingering == [], f"SIGTERMed workers still running: {lingering}"
    finally:
        stop_processes(procs + stopped, timeout=15)
    jobs = Job.fetch_many(ids, connection=conn, serializer=JSONSerializer)
    statuses = collections.Counter(j.get_status() if j else None for j in jobs)
    runs = collections.Counter(x.decode() for x in conn.lrange(EXECUTIONS, 0, -1))
    print(
        f"\n{len(ids)} jobs, {kills} SIGKILLs and {stops} SIGTERMs over {spawned} worker "
        f"processes; statuses {dict(statuses)}; executed {len(runs)} jobs "
        f"{sum(runs.values())} times ({sum(runs.values()) - len(runs)} duplicate executions)"
    )
    assert kills + stops >= 200
    assert statuses == {JobStatus.FINISHED: len(ids)}  # none lost, none stuck, none failed
    assert set(runs) == set(ids)  # every job ran (at least once: delivery is at-least-once)
