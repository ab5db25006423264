"""The "uncertain" answer end to end: a version whose calibration leaves every answer under its
threshold, served by a real worker, read by the producer and shown by the real bot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.fake_telegram import TOKEN, FakeTelegramServer
from shared.local import (
    RedisServer,
    start,
    start_producer,
    start_worker,
    stop_processes,
    wait_for_workers,
)
from shared.store import ModelStore
from tests.conftest import copy_store, env_for, publish_copy

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def test_uncertain_answers_reach_the_output_file_and_the_bot_says_so(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    store = copy_store(tiny_store, tmp_path / "models")

    def flat(folder: Path, manifest: dict[str, Any]) -> None:  # every answer near 50/50
        manifest["calibration"] = {"temperature": 200.0, "bias": 0.0, "uncertain_below": 0.6}

    publish_copy(store, edit=flat)
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text(
        "A superb, wonderful film.\nAwful and boring.\n\n"
        "Ein wunderbarer Film, ich habe jede Minute genossen!\n"
    )
    with RedisServer.temporary() as server, FakeTelegramServer() as fake:
        env = {
            **env_for(server.url, store),
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": fake.url,
        }
        log = tmp_path / "worker.log"
        worker = start_worker(env, "uncertain", log)
        bot = start("bot", [], env, tmp_path / "bot.log")
        try:
            wait_for_workers(server.url, [worker], [log])
            producer = start_producer(env, src, out)
            stdout, _ = producer.communicate(timeout=120)
            assert producer.returncode == 0, stdout.decode()[-2000:]
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            assert [r.get("uncertain") for r in rows] == [True, True, None, True]
            # The review in German says so through the queue and the producer's output.
            assert [r.get("language") for r in rows] == ["en", "en", None, "de"]
            assert [r.get("label") for r in rows[:2]] == ["positive", "negative"]  # kept
            # No confident opinion anywhere: the four-valued verdict says neutral.
            assert [r.get("verdict") for r in rows[:2]] == ["neutral", "neutral"]
            assert rows[2]["error"] == "empty review"
            assert all(max(r["scores"].values()) < 0.6 for r in rows[:2])

            fake.wait_for(lambda: fake.calls_to("deleteWebhook"), timeout=60)
            message = fake.message(51, "A superb, wonderful film.")
            fake.push("message", message)

            def answered() -> Any:
                done = [
                    r
                    for r in fake.replies_to(message["message_id"])
                    if "Analysing" not in r["text"]
                ]
                return done[0] if done else None

            reply = fake.wait_for(answered, timeout=60)
            assert "Neutral" in reply["text"] and "leaning positive" in reply["text"]
        finally:
            stop_processes([bot, worker], timeout=15)
