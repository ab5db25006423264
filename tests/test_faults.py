"""Faults with real processes: redis-server restarted during enqueue and during processing.

Redis runs with append-only persistence (as in docker-compose.yml), so queued jobs survive a
restart; producer and workers reconnect (bounded retries with backoff), and re-running the
producer after a failure resumes without duplicating work.
"""

from __future__ import annotations

import json
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

from shared.local import RedisServer, workers
from shared.store import ModelStore
from tests.conftest import REPO, copy_store, env_for, publish_copy
from tests.test_redis_integration import enqueue_no_wait, events, run_producer, write_input

REDIS = shutil.which("redis-server")
PRODUCER = [sys.executable, "-m", "shared.commands.enqueue"]
pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(REDIS is None, reason="redis-server not installed"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path / "redis", appendfsync="always")
    started.start()
    yield started
    started.stop()


def _rows(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in out.read_text().splitlines()]


def test_redis_restarts_during_enqueue_and_processing(
    server: RedisServer,
    tiny_store: ModelStore,
    tmp_path: Path,
    record_property: Any,
) -> None:
    env = env_for(server.url, tiny_store)
    log = tmp_path / "worker0.log"
    with workers(env, 1, tmp_path) as (worker,):
        src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
        lines = write_input(src, 4000, words=3)
        # 1. Restart while the producer enqueues (small jobs: many pipelines) and the worker runs.
        producer = run_producer(env, src, out, "--chunk-size", "8")
        conn = Redis.from_url(server.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and conn.llen("rq:queue:sentiment-bulk") < 20:
            time.sleep(0.01)
        server.kill()
        time.sleep(1.0)
        server.start()
        first = producer.communicate(timeout=240)[0].decode(errors="replace")
        assert producer.returncode == 0, first[-2000:]  # it reconnected and finished
        rows = _rows(out)
        assert [r["line"] for r in rows] == list(range(1, len(lines) + 1))
        assert sum(1 for r in rows if r["error"]) == 1  # only the empty line
        # 2. Restart while the worker is busy with a queued batch (--no-wait, then --collect).
        src2, out2 = tmp_path / "in2.txt", tmp_path / "out2.jsonl"
        lines2 = write_input(src2, 6000, words=4)
        batch_id = enqueue_no_wait(env, src2, "--chunk-size", "8")
        conn = Redis.from_url(server.url)
        queued = conn.llen("rq:queue:sentiment-bulk")
        while conn.llen("rq:queue:sentiment-bulk") > queued - 20:
            time.sleep(0.01)
        assert conn.llen("rq:queue:sentiment-bulk") > 100  # killed mid-processing
        server.kill()
        time.sleep(1.0)
        server.start()
        collect = subprocess.run(
            [*PRODUCER, "--collect", batch_id, "-o", str(out2)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert collect.returncode == 0, collect.stdout[-1000:] + collect.stderr[-2000:]
        rows2 = _rows(out2)
        assert [r["line"] for r in rows2] == list(range(1, len(lines2) + 1))
        assert sum(1 for r in rows2 if r["error"]) == 1
        assert worker.poll() is None, "the worker must survive Redis restarts"
        # Re-running the producer resumes: nothing is enqueued twice, the output is the same.
        before = len(events(log, "job_done"))
        rerun = run_producer(env, src2, out2, "--chunk-size", "8")
        assert rerun.wait(120) == 0
        assert _rows(out2) == rows2 and len(events(log, "job_done")) == before
        # Delivery is at-least-once: a job whose result was lost in the kill runs again. How many
        # depends on how many finished in the last moment before it (machine speed), so it is
        # measured and reported (junit property), never bounded; the invariants are the output's.
        done_jobs = [e["job_id"] for e in events(log, "job_done")]
        record_property("duplicate_executions", len(done_jobs) - len(set(done_jobs)))


def test_broken_versions_published_under_load_are_refused_with_zero_failed_jobs(
    server: RedisServer, tiny_store: ModelStore, tmp_path: Path
) -> None:
    """Corrupt model file, wrong vocabulary, accuracy under the bar: nothing fails."""
    from shared.store import PublishRefused
    from shared.vocab import Vocabulary

    store = copy_store(tiny_store, tmp_path / "models")
    good = store.resolve("LATEST")
    env = env_for(server.url, store)
    log = tmp_path / "worker0.log"

    def corrupt_model(folder: Path, manifest: dict[str, Any]) -> None:
        (folder / "model.keras").write_bytes(b"PK\x03\x04 not really a model")

    def wrong_vocabulary(folder: Path, manifest: dict[str, Any]) -> None:
        vocab = Vocabulary.load(folder / "vocab.json")
        Vocabulary([*vocab.tokens[:2], *reversed(vocab.tokens[2:])]).save(folder / "vocab.json")

    def under_the_bar(folder: Path, manifest: dict[str, Any]) -> None:
        manifest["metrics"] = {"test": {"accuracy": 0.5}}

    with workers(env, 1, tmp_path) as (worker,):
        src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
        lines = write_input(src, 3000, words=3)
        producer = run_producer(env, src, out, "--chunk-size", "16")
        conn = Redis.from_url(server.url)
        while not conn.exists("rq:finished:sentiment-bulk"):
            time.sleep(0.01)
        publish_copy(store, edit=corrupt_model)
        time.sleep(1.0)
        publish_copy(store, edit=wrong_vocabulary)
        time.sleep(1.0)
        with pytest.raises(PublishRefused):
            publish_copy(store, edit=under_the_bar, min_accuracy=0.9)
        assert store.latest() == "v0003"  # the refused one never moved LATEST
        assert producer.wait(180) == 0
        rows = _rows(out)
        assert len(rows) == len(lines)
        assert [r for r in rows if r["error"] and r["error"] != "empty review"] == []
        assert {r["model_version"] for r in rows if not r["error"]} == {f"{good.name}/v0001"}
        failures = events(log, "model_reload_failed")
        reasons = " ".join(e["reason"] for e in failures)
        assert "cannot load model" in reasons or "checksum" in reasons
        assert "vocabulary does not match" in reasons
        assert worker.poll() is None
        from rq.registry import FailedJobRegistry

        assert FailedJobRegistry("sentiment-bulk", connection=conn).count == 0


def test_sigterm_lets_the_running_job_finish_and_rq_info_shows_the_heartbeat(
    server: RedisServer, tiny_store: ModelStore, tmp_path: Path
) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from shared.local import start
    from tests.light_worker import PAUSE

    env = env_for(server.url, tiny_store)
    with workers(env, 1, tmp_path, prefix="graceful"):
        info = subprocess.run(
            [str(Path(sys.executable).with_name("rq")), "info", "--url", server.url, "-W"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "graceful" in info.stdout, info.stdout + info.stderr  # registered, heartbeating
    # SIGTERM while a job runs: the service's worker core (ReliableWorker, here without a model
    # so that a job can take seconds: the service only runs sentiment jobs) finishes it first.
    conn = Redis.from_url(server.url)
    worker = start("tests.light_worker", ["graceful-light"], env, tmp_path / "light.log")
    try:
        queue = Queue("sentiment-bulk", connection=conn, serializer=JSONSerializer)
        job = queue.enqueue(PAUSE, 3.0)
        deadline = time.monotonic() + 60
        while job.get_status(refresh=True).value != "started":
            assert time.monotonic() < deadline, (tmp_path / "light.log").read_text()[-2000:]
            time.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert job.get_status(refresh=True).value == "finished"  # finished, not abandoned
    finally:
        if worker.poll() is None:
            worker.kill()
