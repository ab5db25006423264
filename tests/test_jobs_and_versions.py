"""Workers run only our jobs, and every answer comes from the version that serves now.

Real processes: a redis-server, a worker with the tiny model, the API, the bot against the fake
Bot API, ``sentiment-enqueue``.

* a job carrying a callback, a webhook, a dependency or more retries than ours is failed without
  running, and nothing it names is imported, called or contacted;
* after a publish, then a rollback, the same text answers with the new serving version through
  the API, the bot, `sentiment-classify` and the producer (reuse never crosses versions);
* a request never cancels a job it did not create, nor a job another request came to share.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from redis import Redis
from rq import Callback, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from bench.fake_telegram import TOKEN, FakeTelegramServer
from shared.announcements import served_version
from shared.local import RedisServer, free_port, start, start_api, stop_processes, workers
from shared.queues import QUEUE_BULK, QUEUE_INTERACTIVE, get_queue
from shared.schema import JOB_FUNCTION, make_payload
from shared.store import ModelStore
from tests.conftest import REPO, copy_store, env_for, publish_copy

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"


class _Hook(BaseHTTPRequestHandler):
    calls: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Hook.calls.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stack(
    tiny_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Path, ModelStore]]:
    tmp = tmp_path_factory.mktemp("jobs")
    store = copy_store(tiny_store, tmp / "models")
    marker = tmp / "attacked"
    with RedisServer.temporary() as server:
        env = {**env_for(server.url, store), "ATTACK_MARKER": str(marker)}
        with workers(env, 1, tmp):
            yield env, tmp, store


def test_jobs_outside_our_contract_run_nothing_of_theirs(
    stack: tuple[dict[str, str], Path, ModelStore],
) -> None:
    env, _, _ = stack
    conn = Redis.from_url(env["REDIS_URL"])
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/steal"
    payload = make_payload([("x", "A superb film.")])
    try:
        jobs = [
            queue.enqueue(
                JOB_FUNCTION,
                payload,
                on_success=Callback("tests.attack_callback.run"),
                retry=Retry(max=5),
            ),
            queue.enqueue(JOB_FUNCTION, payload, on_failure=Callback("tests.attack_callback.run")),
            queue.enqueue(
                JOB_FUNCTION,
                payload,
                webhooks=[Webhook(url, "finished"), Webhook(url, "failed", method="POST")],
            ),
            queue.enqueue("os.system", "touch /tmp/never", webhooks=[Webhook(url, "failed")]),
            queue.enqueue(JOB_FUNCTION, payload, retry=Retry(max=50)),
        ]
        deadline = time.monotonic() + 60
        while any(j.get_status(refresh=True) != JobStatus.FAILED for j in jobs):
            assert time.monotonic() < deadline, [j.get_status() for j in jobs]
            time.sleep(0.1)
        time.sleep(1.0)  # a webhook or a retry would come now
        for job in jobs:
            job.refresh()
            assert job.get_status() == JobStatus.FAILED and "refused" in (job.exc_info or "")
            assert job.number_of_retries in (None, 0)  # failed once, never retried
        assert _Hook.calls == []
        assert not Path(env["ATTACK_MARKER"]).exists()  # the callback's module never imported
    finally:
        hook.shutdown()


def _ask_api(url: str, text: str) -> str:
    answer = httpx.post(
        f"{url}/v1/classify", json={"review": text}, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def _enqueue(env: dict[str, str], src: Path, out: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.enqueue", str(src), "-o", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {json.loads(line)["model_version"] for line in out.read_text().splitlines()}


def _classify(env: dict[str, str], text: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.classify", text],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _served(conn: Redis, version: str) -> None:
    deadline = time.monotonic() + 60
    while served_version(conn) != version:
        assert time.monotonic() < deadline, served_version(conn)
        time.sleep(0.1)


def test_after_a_publish_and_a_rollback_the_same_text_answers_with_the_serving_version(
    stack: tuple[dict[str, str], Path, ModelStore],
) -> None:
    env, tmp, store = stack
    conn = Redis.from_url(env["REDIS_URL"])
    text = "A superb, wonderful film with an awful ending."
    src = tmp / "one.txt"
    src.write_text(f"{text}\n{text} Again.\n")
    port = free_port()
    api = start_api({**env, "API_TOKENS": f"alice={ALICE}"}, ["--port", str(port)], tmp / "a.log")
    server = FakeTelegramServer()
    fake = server.__enter__()
    bot = start(
        "bot",
        [],
        {**env, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.url, "NO_PROXY": "*"},
        tmp / "bot.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        fake.wait_for(lambda: fake.calls_to("deleteWebhook"), timeout=60)

        def ask_bot(user: int) -> str:
            message = fake.message(user, text)
            fake.push("message", message)

            def final() -> Any:
                done = [
                    r
                    for r in fake.replies_to(message["message_id"])
                    if "Analysing" not in r["text"]
                ]
                return done[0]["text"] if done else None

            return str(fake.wait_for(final, timeout=60))

        first = store.latest()
        assert _ask_api(url, text) == f"tiny/{first}" and f"tiny/{first}" in ask_bot(1)
        assert _enqueue(env, src, tmp / "out1.jsonl") == {f"tiny/{first}"}
        assert f"model tiny/{first}" in _classify(env, text)
        new = publish_copy(store, first).version
        _served(conn, f"tiny/{new}")
        assert _ask_api(url, text) == f"tiny/{new}"
        assert f"tiny/{new}" in ask_bot(2)
        assert _enqueue(env, src, tmp / "out2.jsonl") == {f"tiny/{new}"}
        assert f"model tiny/{new}" in _classify(env, text)
        store.rollback()
        _served(conn, f"tiny/{first}")
        assert _ask_api(url, text) == f"tiny/{first}"
        assert f"tiny/{first}" in ask_bot(3)
        assert _enqueue(env, src, tmp / "out3.jsonl") == {f"tiny/{first}"}
        assert f"model tiny/{first}" in _classify(env, text)
    finally:
        stop_processes([api, bot])
        server.__exit__(None, None, None)


def test_a_request_never_cancels_a_job_it_did_not_create(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    """No worker: every request times out.  A batch's job, and an interactive job two
    requests share, both outlive the timeouts and are answered once a worker starts."""
    with RedisServer.temporary() as server:
        env = env_for(server.url, tiny_store)
        conn = Redis.from_url(server.url)
        port = free_port()
        api = start_api(
            {**env, "API_TOKENS": f"alice={ALICE},bob={BOB}", "API_TIMEOUT_S": "2"},
            ["--port", str(port)],
            tmp_path / "api.log",
        )
        try:
            url = f"http://127.0.0.1:{port}"
            upload = httpx.post(
                f"{url}/v1/batches",
                files={"file": ("b.txt", b"Shared words here.\n")},
                headers={"Authorization": f"Bearer {ALICE}"},
            )
            assert upload.status_code == 202
            bulk = f"rq:queue:{QUEUE_BULK}"
            deadline = time.monotonic() + 30
            while conn.llen(bulk) != 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            (batch_job,) = [j.decode() for j in conn.lrange(bulk, 0, -1)]
            body = {"reviews": [{"id": "b.txt:1", "text": "Shared words here."}]}

            def classify(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                return httpx.post(
                    f"{url}/v1/classify", json=body, headers=headers, timeout=30
                ).status_code

            with httpx.Client():
                results: list[int] = []
                threads = [
                    threading.Thread(target=lambda t=t: results.append(classify(t)))
                    for t in (ALICE, BOB)
                ]
                for t in threads:
                    t.start()
                    time.sleep(0.3)
                for t in threads:
                    t.join()
            assert results == [503, 503]
            time.sleep(2.0)  # the cancellations run in the background
            interactive = [j.decode() for j in conn.lrange(f"rq:queue:{QUEUE_INTERACTIVE}", 0, -1)]
            assert len(interactive) == 1  # created by one, shared by the other: kept
            assert [j.decode() for j in conn.lrange(bulk, 0, -1)] == [batch_job]
            with workers(env, 1, tmp_path):
                for job_id in (batch_job, interactive[0]):
                    job = Job(job_id, connection=conn, serializer=JSONSerializer)
                    deadline = time.monotonic() + 60
                    while job.get_status(refresh=True) != JobStatus.FINISHED:
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
        finally:
            stop_processes([api])
