"""A full Redis (``maxmemory`` reached, policy ``noeviction``) refuses writes: the producer says
so in one line and the workers wait; nothing is lost, and everything completes once memory is
freed.  Every key we create expires; a Redis that would evict keys is reported at start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from shared.local import RedisServer, start, workers
from shared.queues import redis_out_of_memory
from shared.store import ModelStore
from tests.conftest import REPO, env_for
from tests.test_redis_integration import enqueue_no_wait, write_input

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]
PRODUCER = [sys.executable, "-m", "shared.commands.enqueue"]


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path / "redis", extra=["--maxmemory", "32mb", "--maxmemory-policy", "noeviction"]
    )
    server.start()
    yield server
    server.stop()


def fill(conn: Redis) -> int:
    """Write strings until Redis refuses even a small one; returns how many went in.

    Big strings first, then smaller ones: a refused 1 MB write counts its own query buffer, so
    Redis may still accept small writes after refusing a big one."""
    written = 0
    for size in (1 << 20, 1 << 16, 1 << 12, 64):
        for _ in range(100_000):
            try:
                conn.set(f"filler:{written}", b"x" * size)
                written += 1
            except ResponseError as exc:
                assert redis_out_of_memory(exc), exc
                break
        else:
            raise AssertionError("Redis never filled up")
    return written


def free(conn: Redis) -> None:
    keys = list(conn.scan_iter("filler:*"))
    if keys:
        conn.delete(*keys)


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_the_producer_says_redis_is_full_in_one_line_and_a_rerun_completes(
    small_redis: RedisServer, tiny_store: ModelStore, tmp_path: Path
) -> None:
    conn = Redis.from_url(small_redis.url)
    env = env_for(small_redis.url, tiny_store)
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    lines = write_input(src, 300)
    fill(conn)
    refused = subprocess.run(
        [*PRODUCER, str(src), "-o", str(out)], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode == 3
    last = refused.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("sentiment-enqueue: Redis is out of memory") and "nothing was lost" in last
    )
    assert "Traceback" not in refused.stderr and not out.exists()
    free(conn)
    with workers(env, 1, tmp_path):
        done = subprocess.run(
            [*PRODUCER, str(src), "-o", str(out), "--timeout", "120"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["line"] for r in _rows(out)] == list(range(1, len(lines) + 1))


def test_a_worker_waits_out_a_full_redis_and_loses_nothing(
    small_redis: RedisServer, tiny_store: ModelStore, tmp_path: Path
) -> None:
    conn = Redis.from_url(small_redis.url)
    env = env_for(small_redis.url, tiny_store)
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    lines = write_input(src, 3000, words=3)
    batch_id = enqueue_no_wait(env, src, "--chunk-size", "8")
    log = tmp_path / "worker0.log"
    with workers(env, 1, tmp_path) as (worker,):
        while not conn.exists("rq:finished:sentiment-bulk"):  # results are being written
            time.sleep(0.01)
        fill(conn)
        deadline = time.monotonic() + 60
        while b"redis_out_of_memory" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # the worker keeps running while Redis refuses its writes
        assert worker.poll() is None, log.read_text()[-3000:]
        free(conn)
        args = ["--collect", batch_id, "-o", str(out), "--timeout", "180"]
        collect = start("shared.commands.enqueue", args, env)
        output = collect.communicate(timeout=240)[0].decode(errors="replace")
        assert collect.returncode == 0, output[-2000:]
    rows = _rows(out)
    assert [r["line"] for r in rows] == list(range(1, len(lines) + 1))
    assert [r["line"] for r in rows if r["error"]] == [8]  # only the empty line
    events = [json.loads(x)["event"] for x in log.read_text().splitlines() if x.startswith("{")]
    assert "redis_out_of_memory" in events and "redis_recovered" in events


def test_every_key_we_create_expires(
    small_redis: RedisServer, tiny_store: ModelStore, tmp_path: Path
) -> None:
    conn = Redis.from_url(small_redis.url)
    env = env_for(small_redis.url, tiny_store)
    src = tmp_path / "in.txt"
    write_input(src, 50)
    with workers(env, 1, tmp_path):
        done = subprocess.run(
            [*PRODUCER, str(src), "-o", str(tmp_path / "o.jsonl")], env=env, cwd=REPO, check=True
        )
        assert done.returncode == 0
    ours = [k.decode() for k in conn.scan_iter("sentiment:*")]
    assert any(k.startswith("sentiment:batch:") for k in ours)
    assert {k: conn.ttl(k) for k in ours if conn.ttl(k) < 0} == {}  # -1: no expiry
    finished = [k.decode() for k in conn.scan_iter("rq:job:*")]
    assert finished and all(conn.ttl(k) > 0 for k in finished)


def test_a_redis_that_would_evict_is_reported_at_start(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", extra=["--maxmemory-policy", "allkeys-lru"])
    server.start()
    try:
        src = tmp_path / "in.txt"
        src.write_text("fine\n")
        done = subprocess.run(
            [*PRODUCER, str(src), "--no-wait"],
            env={**env_for(server.url, ModelStore(tmp_path, "m")), "LOG_FORMAT": "json"},
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
        warned = [e for e in events if e["event"] == "redis_memory_policy"]
        assert warned and warned[0]["policy"] == "allkeys-lru"
        assert warned[0]["required"] == "noeviction"
    finally:
        server.stop()
