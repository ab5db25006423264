"""Real redis-server, real worker processes: bulk output, hot reload under load, SIGKILL mid-job.

The fixture starts ``redis-server`` on a free loopback port (``.ci/run`` installs it); the tests
are skipped only where no binary exists.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from shared.local import RedisServer, free_port, start_producer, start_worker, wait_for_workers
from shared.local import stop_processes as stop
from shared.queues import QUEUE_BULK, WORKER_QUEUES
from shared.store import ModelStore
from tests.conftest import REPO, copy_store, env_for, publish_copy, synthetic_review

REDIS = shutil.which("redis-server")
pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(REDIS is None, reason="redis-server not installed"),
]


@pytest.fixture
def redis_url() -> Iterator[str]:
    with RedisServer.temporary() as server:
        yield server.url


@pytest.fixture
def store_copy(tiny_store: ModelStore, tmp_path: Path) -> ModelStore:
    return copy_store(tiny_store, tmp_path / "models")  # type: ignore[no-any-return]


def write_input(path: Path, n: int, words: int = 1) -> list[str]:
    rng = random.Random(5)
    lines = [" ".join(synthetic_review(rng, i % 2) for _ in range(words)) for i in range(n)]
    lines[7] = ""  # a bad line must still get its output line
    path.write_text("\n".join(lines) + "\n")
    return lines


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            found.append(json.loads(line))
    return found


def run_producer(env: dict[str, str], src: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return start_producer(env, src, out, "--timeout", "120", *extra)


def enqueue_no_wait(env: dict[str, str], src: Path, *extra: str) -> str:
    """``sentiment-enqueue SRC --no-wait``; the batch id it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.enqueue", str(src), "--no-wait", *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()[-1]


def check_output(out: Path, lines: list[str]) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(lines) + 1))
    assert rows[7]["error"] == "empty review"
    assert [r for i, r in enumerate(rows) if i != 7 and r["error"]] == []
    return rows


def test_producer_two_workers_output_and_rerun(
    redis_url: str, store_copy: ModelStore, tmp_path: Path
) -> None:
    env = env_for(redis_url, store_copy)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [start_worker(env, f"w{i}", log) for i, log in enumerate(logs)]
    try:
        wait_for_workers(redis_url, workers, logs, names=["w0", "w1"])
        src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
        lines = write_input(src, 600)
        producer = run_producer(env, src, out, "--chunk-size", "16")
        stdout = producer.communicate(timeout=120)[0].decode()
        assert producer.returncode == 0, stdout
        rows = check_output(out, lines)
        assert {r["model_version"] for r in rows if not r["error"]} == {"tiny/v0001"}
        per_worker = [len(events(log, "job_done")) for log in logs]
        assert all(n > 0 for n in per_worker) and sum(per_worker) == 38  # both workers served
        rerun = run_producer(env, src, tmp_path / "again.jsonl", "--chunk-size", "16")
        assert rerun.wait(60) == 0
        assert sum(len(events(log, "job_done")) for log in logs) == 38  # nothing redone
        assert (tmp_path / "again.jsonl").read_text() == out.read_text()
        one = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.commands.classify",
                "A wonderful superb film, not boring",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert one.returncode == 0, one.stderr
        assert "positive (" in one.stdout.splitlines()[0] and "[+superb]" in one.stdout
        # Anyone who can write to Redis can enqueue a job naming any function: refused.
        conn = Redis.from_url(redis_url)
        marker = tmp_path / "pwned"
        for name in WORKER_QUEUES:
            Queue(name, connection=conn, serializer=JSONSerializer).enqueue(
                "os.system", f"touch {marker}"
            )
        failed = [FailedJobRegistry(q, connection=conn) for q in WORKER_QUEUES]
        deadline = time.monotonic() + 30
        while sum(f.count for f in failed) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(f.count for f in failed) == 2 and not marker.exists()
        refused = [e for log in logs for e in events(log, "job_refused")]
        assert {e["function"] for e in refused} == {"os.system"}
        again = subprocess.run(  # the same workers go on answering reviews
            [sys.executable, "-m", "shared.commands.classify", "Dull and boring"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0 and "negative (" in again.stdout.splitlines()[0], again.stderr
    finally:
        stop(workers)


def test_hot_reload_while_jobs_flow(redis_url: str, store_copy: ModelStore, tmp_path: Path) -> None:
    env = env_for(redis_url, store_copy)
    log = tmp_path / "workers.log"
    workers = [start_worker(env, "", log, "--processes", "2")]  # one supervisor, two workers
    try:
        wait_for_workers(redis_url, workers, [log], count=2)
        src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
        lines = write_input(src, 2000, words=3)
        producer = run_producer(env, src, out, "--chunk-size", "4")
        conn = Redis.from_url(redis_url)
        while len(conn.keys("rq:results:*")) < 60:  # let jobs flow first
            time.sleep(0.05)
        publish_copy(store_copy)
        assert producer.wait(120) == 0
        rows = check_output(out, lines)
        versions = [r["model_version"] for r in rows if not r["error"]]
        assert set(versions) == {"tiny/v0001", "tiny/v0002"}
        reloads = events(log, "model_reloaded")
        assert len({e["worker"] for e in events(log, "worker_started")}) == 2
        assert sorted(e["worker"] for e in reloads) == sorted({e["worker"] for e in reloads})
        assert len(reloads) == 2  # exactly once per worker
        assert {(e["old_version"], e["model_version"]) for e in reloads} == {
            ("tiny/v0001", "tiny/v0002")
        }
        failed = conn.zcard(f"rq:registry:failed:{QUEUE_BULK}")
        assert failed == 0
        # The supervisor starts a worker process again when one dies.
        before = {w.name: w.pid for w in Worker.all(connection=conn)}
        os.kill(next(iter(before.values())), signal.SIGKILL)
        wait_for_workers(redis_url, workers, [log], count=len(before) + 1)
        assert workers[0].poll() is None
    finally:
        stop(workers)


def test_unreachable_redis_is_one_clear_line_without_the_password(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a review\n")
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.enqueue", str(src)],
        env={**os.environ, "REDIS_URL": url, "PYTHONPATH": str(REPO), "LOG_FORMAT": "json"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sentiment-enqueue: cannot reach Redis at redis://user:***@127.0.0.1:")
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_sigkilled_worker_job_is_rerun_by_another(
    redis_url: str, store_copy: ModelStore, tmp_path: Path
) -> None:
    env = env_for(redis_url, store_copy)
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]
    victim = start_worker(env, "victim", logs[0])
    wait_for_workers(redis_url, [victim], logs[:1], names=["victim"])
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    lines = write_input(src, 3000, words=4)
    producer = run_producer(env, src, out, "--chunk-size", "256")
    conn = Redis.from_url(redis_url)
    registry = StartedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    deadline = time.monotonic() + 60
    while not registry.get_job_ids() and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.kill()  # SIGKILL while it holds a started job
    victim.wait()
    abandoned = registry.get_job_ids()
    assert abandoned, "victim was not mid-job"
    survivor = start_worker(env, "survivor", logs[1])
    try:
        stdout = producer.communicate(timeout=150)[0].decode()
        assert producer.returncode == 0, stdout
        check_output(out, lines)
        rerun = {e["job_id"] for e in events(logs[1], "job_done")}
        assert set(abandoned) <= rerun
    finally:
        stop([survivor])


@pytest.mark.parametrize("extra", [[], ["--processes", "2"]])
def test_a_worker_that_cannot_reach_redis_says_so_and_exits_2(
    tmp_path: Path, extra: list[str]
) -> None:
    """Redis is checked before the model loads, and a supervisor does not restart workers that
    cannot start: the command ends with one clear line instead of looping."""
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [sys.executable, "-m", "worker", *extra],
        env={**os.environ, "REDIS_URL": url, "PYTHONPATH": str(REPO), "LOG_FORMAT": "json"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach Redis at redis://user:***@127.0.0.1:" in done.stderr
    assert "hunter2" not in done.stderr and "model_loaded" not in done.stderr


def test_a_url_that_answers_but_not_as_redis_is_one_clear_line(tmp_path: Path) -> None:
    import socketserver
    import threading

    class Http(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(1024)
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with socketserver.TCPServer(("127.0.0.1", 0), Http) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        src = tmp_path / "in.txt"
        src.write_text("a review\n")
        done = subprocess.run(
            [sys.executable, "-m", "shared.commands.enqueue", str(src)],
            env={
                **os.environ,
                "REDIS_URL": f"redis://127.0.0.1:{server.server_address[1]}/0",
                "PYTHONPATH": str(REPO),
            },
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        server.shutdown()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "does not answer as Redis" in done.stderr and "Traceback" not in done.stderr
