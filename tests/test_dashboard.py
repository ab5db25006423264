"""rq-dashboard, as compose runs it (pinned 0.9.0, ``--json``), against a real redis-server with
our finished, failed and started jobs: every job page opens (HTTP 200) and shows the job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from shared.local import RedisServer, free_port, start, stop_processes, workers
from shared.queues import QUEUE_BULK, collect, enqueue_payloads, get_queue
from shared.schema import make_payload
from shared.store import ModelStore
from tests.conftest import REPO, env_for

DASHBOARD = Path(sys.executable).with_name("rq-dashboard")
pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
    pytest.mark.skipif(not DASHBOARD.exists(), reason="rq-dashboard not installed (dev extra)"),
]


def dashboard(redis_url: str, port: int, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(DASHBOARD), "--redis-url", redis_url, "--bind", "127.0.0.1", "--port", str(port),
         *flags],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)


@pytest.fixture(scope="module")
def jobs(
    tiny_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A Redis holding a finished, a failed and a started job of ours (shared by the module's
    tests, which only read them: starting a worker costs seconds)."""
    from tests.light_worker import PAUSE

    tmp_path = tmp_path_factory.mktemp("dashboard-jobs")

    with RedisServer.temporary() as server:
        conn = Redis.from_url(server.url)
        env = env_for(server.url, tiny_store)
        with workers(env, 1, tmp_path):
            queue = get_queue(QUEUE_BULK, conn)
            (finished,) = enqueue_payloads(queue, [make_payload([("r1", "A superb film.")])])
            assert collect(conn, [finished], timeout=60)[finished].result is not None
            failed = Queue(QUEUE_BULK, connection=conn, serializer=JSONSerializer).enqueue(
                "os.system", "true"
            )
            deadline = time.monotonic() + 30
            while failed.get_status(refresh=True).value != "failed":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        light = start("tests.light_worker", ["dash-light"], env, tmp_path / "light.log")
        try:
            started = queue.enqueue(PAUSE, 300.0, job_timeout=600)
            deadline = time.monotonic() + 60
            while started.get_status(refresh=True).value != "started":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            yield server.url, {"finished": finished, "failed": failed.id, "started": started.id}
        finally:
            light.kill()
            light.wait()


def test_every_job_page_opens_and_shows_the_job(
    jobs: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    redis_url, ids = jobs
    port = free_port()
    proc = dashboard(redis_url, port, tmp_path / "dashboard.log", "--json")
    try:
        base = f"http://127.0.0.1:{port}"
        for status, job_id in ids.items():
            page = httpx.get(f"{base}/0/view/job/{job_id}", timeout=30)
            assert page.status_code == 200 and job_id in page.text, status
            data = httpx.get(f"{base}/0/data/job/{job_id}.json", timeout=30)
            assert data.status_code == 200, (status, data.text[:500])
            job = data.json()
            assert job["status"] == status
            if status == "finished":
                result = job["result"]
                assert result["results"][0]["label"] == "positive"
                assert result["model_version"].startswith("tiny/")
            if status == "failed":
                assert "refused" in (job["exc_info"] or "")
        queues = httpx.get(f"{base}/0/data/queues.json", timeout=30).json()
        assert {q["name"] for q in queues["queues"]} >= {"sentiment-bulk"}
    finally:
        stop_processes([proc])


def test_without_json_the_job_page_data_fails_as_reported(
    jobs: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Why compose passes --json: the default (pickle) serializer cannot read our jobs."""
    redis_url, ids = jobs
    port = free_port()
    proc = dashboard(redis_url, port, tmp_path / "dashboard.log")
    try:
        data = httpx.get(f"http://127.0.0.1:{port}/0/data/job/{ids['finished']}.json", timeout=30)
        assert data.status_code == 500
    finally:
        stop_processes([proc])


def test_sentiment_dashboard_needs_a_password_and_refuses_cross_site_buttons(
    jobs: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """As compose runs it: no start without credentials; 401 without them; a page on another
    origin cannot empty a queue or requeue jobs through a logged-in browser; the same page from
    the dashboard's own origin can."""
    redis_url, ids = jobs
    base_env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO)}
    refused = subprocess.run(
        [sys.executable, "-m", "shared.commands.dashboard"],
        env={k: v for k, v in base_env.items() if not k.startswith("RQ_DASHBOARD_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "RQ_DASHBOARD_PASSWORD" in refused.stderr
    port = free_port()
    env = {**base_env, "RQ_DASHBOARD_USERNAME": "ops", "RQ_DASHBOARD_PASSWORD": "a-long-password"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.commands.dashboard", "--port", str(port)],
        env=env,
        stdout=(tmp_path / "dash.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    auth = ("ops", "a-long-password")
    conn = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/", timeout=2).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        page = httpx.get(f"{base}/0/view/job/{ids['finished']}", auth=auth, timeout=30)
        assert page.status_code == 200 and ids["finished"] in page.text
        failed_before = conn.zcard(f"rq:failed:{QUEUE_BULK}")
        evil = {"Origin": "https://evil.example"}
        for method, path in (
            ("POST", f"/queue/{QUEUE_BULK}/failed/empty"),
            ("GET", f"/requeue/{QUEUE_BULK}"),
            ("POST", f"/job/{ids['failed']}/delete"),
        ):
            answer = httpx.request(method, f"{base}{path}", auth=auth, headers=evil, timeout=30)
            assert answer.status_code == 403, (method, path, answer.status_code)
            no_origin = httpx.request(method, f"{base}{path}", auth=auth, timeout=30)
            assert no_origin.status_code == 403, (method, path)
        assert conn.zcard(f"rq:failed:{QUEUE_BULK}") == failed_before  # nothing changed
        own = httpx.post(
            f"{base}/queue/{QUEUE_BULK}/failed/empty",
            auth=auth,
            headers={"Origin": base},
            timeout=30,
        )
        assert own.status_code == 200 and conn.zcard(f"rq:failed:{QUEUE_BULK}") == 0
    finally:
        stop_processes([proc])
