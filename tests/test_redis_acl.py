"""Redis ACL users per component (``sentiment-redis-acl``) on a real redis-server: each
component does its whole job as its own user, and nothing beyond it."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from shared import feedback
from shared.commands.redis_acl import RULES, acl_file
from shared.local import RedisServer, free_port, start_api, stop_processes, workers
from shared.store import ModelStore
from tests.conftest import env_for

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]
PASSWORDS = {user: f"{user}-password-0123456789" for user in RULES}
TOKEN = "alice-token-0123456789abcdef"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    tmp = tmp_path_factory.mktemp("acl")
    acl = tmp / "users.acl"
    acl.write_text(acl_file(PASSWORDS))
    server = RedisServer(tmp / "redis", extra=["--aclfile", str(acl)])
    server.url = url_for(server, "admin")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url_for(server: RedisServer, user: str) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{server.port}/0"


def as_user(server: RedisServer, user: str) -> Redis:
    return Redis.from_url(url_for(server, user))


def test_the_default_user_is_off(acl_server: RedisServer) -> None:
    with pytest.raises((AuthenticationError, ResponseError)):
        Redis(port=acl_server.port).ping()


def test_worker_and_api_do_their_whole_job_as_their_own_users(
    acl_server: RedisServer, tiny_store: ModelStore, tmp_path: Path
) -> None:
    env = env_for(url_for(acl_server, "worker"), tiny_store)
    with workers(env, 1, tmp_path):
        port = free_port()
        api_env = {**env, "REDIS_URL": url_for(acl_server, "api"), "API_TOKENS": TOKEN}
        api = start_api(api_env, ["--port", str(port)], tmp_path / "api.log")
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            ) as http:
                answer = http.post("/v1/classify", json={"review": "A superb film."})
                assert answer.status_code == 200, answer.text
                vote = http.post("/v1/feedback", json={"text": "Fine.", "label": "positive"})
                assert vote.status_code == 201, vote.text
                batch = http.post("/v1/batches", files={"file": ("b.txt", b"Great.\nBad.\n")})
                assert batch.status_code == 202
                rows = http.get(batch.json()["results_url"]).text.splitlines()
                assert len(rows) == 2 and all('"label"' in r for r in rows)
                assert http.get("/v1/model").status_code == 200
                assert http.get("/readyz").json()["workers"] == 1
        finally:
            stop_processes([api])
        # The bot's whole path as the bot user: enqueue, wait, keep the answer, a vote, a limit.
        from shared.aqueue import AsyncQueueClient
        from shared.ratelimit import AsyncLimiter, Limiter

        async def bot_path() -> None:
            client = AsyncQueueClient(url_for(acl_server, "bot"))
            try:
                ticket = await client.submit("tg-1", "An awful film.", 5)
                outcome = await client.wait(ticket.job_id, 30)
                assert outcome is not None and outcome.result is not None
                assert (await AsyncLimiter(client.aconn).hit("bot", "u", 5)).allowed
                assert await client.served_model()
            finally:
                await client.close()

        asyncio.run(bot_path())
        bot = as_user(acl_server, "bot")
        token = feedback.remember_answer(bot, "An awful film.", "negative", "tiny/v0001", 1)
        assert feedback.answer_of(bot, token)
        feedback.allow(Limiter(bot), "voter", 5)
        feedback.record(bot, _vote())


def _vote() -> feedback.Feedback:
    return feedback.Feedback(
        text="A superb film.",
        label="positive",
        predicted="negative",
        model_version="tiny/v0001",
        user="someone",
        message="tg:m",
        source="bot",
        at=time.time(),
    )


def test_every_user_is_refused_what_is_not_its_job(acl_server: RedisServer) -> None:
    from shared.metrics import QueueCollector
    from shared.queues import WORKER_QUEUES
    from worker.training.lock import RedisLock

    refused = {
        "api": [
            ("FLUSHALL",),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("KEYS", "*"),
            ("HSET", "sentiment:served-model", "model_version", "evil/v9"),
            ("DEL", "sentiment:trainer:lock"),
            ("SET", "sentiment:model-decision", "x"),
        ],
        "bot": [("DEL", "sentiment:batch:abc"), ("FLUSHDB",), ("SHUTDOWN",)],
        "worker": [("XADD", "sentiment:feedback", "*", "a", "b"), ("GET", "sentiment:batch:x")],
        "trainer": [
            ("XADD", "sentiment:feedback", "*", "a", "b"),
            ("LPUSH", "rq:queue:sentiment-bulk", "x"),
        ],
        "exporter": [("SET", "rq:queue:x", "1"), ("DEL", "sentiment:feedback")],
        "keda": [("GET", "sentiment:feedback"), ("LPUSH", "rq:queue:sentiment-bulk", "x")],
    }
    for user, commands in refused.items():
        conn = as_user(acl_server, user)
        assert conn.ping()
        for command in commands:
            with pytest.raises(NoPermissionError):
                conn.execute_command(*command)
    # ... and each can do its own: the trainer reads votes and holds its lock; the exporter
    # reads the queues; KEDA reads their lengths.
    trainer = as_user(acl_server, "trainer")
    assert isinstance(list(feedback.entries(trainer)), list)
    lock = RedisLock(trainer, 5)
    assert lock.acquire()
    lock.release()
    families = {
        f.name: f for f in QueueCollector(as_user(acl_server, "exporter"), WORKER_QUEUES).collect()
    }
    assert families["sentiment_redis_up"].samples[0].value == 1  # it read everything it needs
    assert as_user(acl_server, "keda").llen("rq:queue:sentiment-interactive") >= 0
