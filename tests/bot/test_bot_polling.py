"""The real bot process — python-telegram-bot's Application and polling loop — end to end.

``sentiment-bot`` runs as a subprocess against a fake Bot API server on 127.0.0.1, with a real
``redis-server`` and a real (non-forking) worker serving the tiny test model.  Only Telegram is
faked; everything of ours is the real thing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fake_telegram import TOKEN, FakeTelegram, FakeTelegramServer, check_text
from shared.local import RedisServer, start, start_worker, stop_processes, wait_for_workers
from shared.store import ModelStore
from tests.conftest import REPO, TEST_SALT, env_for

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


class Bot:
    """A running ``python -m bot`` process and the fake Telegram it talks to."""

    def __init__(self, fake: FakeTelegram, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.fake, self.proc, self.log = fake, proc, log

    def ask(self, user_id: int, text: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """Send a message; return its id and the bot's final reply (not the placeholder)."""
        message = self.fake.message(user_id, text, **kwargs)
        self.fake.push("message", message)
        return message["message_id"], self.final_reply(message["message_id"])

    def final_reply(self, message_id: int, timeout: float = 30) -> dict[str, Any]:
        def done() -> Any:
            replies = self.fake.replies_to(message_id)
            finals = [r for r in replies if "Analysing" not in r["text"]]
            return finals[0] if finals else None

        return dict(self.fake.wait_for(done, timeout))

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"raw": raw})
        return lines


def _start_bot(env: dict[str, str], tmp: Path, name: str) -> Iterator[Bot]:
    server = FakeTelegramServer()
    with server as fake:
        log = tmp / f"{name}.log"
        proc = start("bot", [], {**env, "TELEGRAM_API_URL": fake.url}, log)
        try:
            fake.wait_for(lambda: fake.calls_to("deleteWebhook"), timeout=60)
            yield Bot(fake, proc, log)
        finally:
            stop_processes([proc], timeout=15)


@pytest.fixture(scope="module")
def system(tiny_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """redis-server + one worker on db 0; the worker announces its model."""
    tmp = tmp_path_factory.mktemp("bot")
    with RedisServer.temporary() as server:
        url = server.url
        env = {
            **env_for(url, tiny_store),
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": TOKEN,
        }
        log = tmp / "worker.log"
        worker = start_worker(env, "bot-tests", log)
        try:
            wait_for_workers(url, [worker], [log])
            yield url, env, tmp
        finally:
            stop_processes([worker])


@pytest.fixture(scope="module")
def bot(system: Any) -> Iterator[Bot]:
    _, env, tmp = system
    yield from _start_bot({**env, "BOT_RATE_PER_MINUTE": "3", "LOG_LEVEL": "INFO"}, tmp, "bot")


def test_start_help_and_model_commands(bot: Bot, tiny_store: ModelStore) -> None:
    assert bot.fake.calls_to("getMe") and bot.fake.calls_to("deleteWebhook")
    commands = bot.fake.calls_to("setMyCommands")[0].params["commands"]
    assert {c["command"] for c in commands} == {"start", "help", "analyze", "model"}
    _, start = bot.ask(101, "/start")
    _, help_ = bot.ask(101, "/help")
    for reply in (start, help_):
        assert "/analyze" in reply["text"] and "Example" in reply["text"]
    _, model = bot.ask(101, "/model")
    version = tiny_store.resolve("LATEST")
    assert f"{version.name}/{version.version}" in model["text"]
    assert f"{version.test_accuracy:.2%}" in model["text"]
    assert version.manifest["created"][:10] in model["text"]


def test_a_review_becomes_an_edited_answer_with_highlighted_words(bot: Bot) -> None:
    text = "A wonderful, superb film: the actor was brilliant and the story moving."
    _, reply = bot.ask(102, text)
    assert len(reply["edits"]) == 1  # the placeholder, edited once into the answer
    answer = reply["text"]
    visible = check_text(answer, "HTML")
    assert visible.startswith("👍 Positive")
    assert "<b>superb</b>" in answer or "<b>wonderful</b>" in answer
    assert "Why:" in visible and "model tiny/" in visible
    assert bot.fake.calls_to("sendChatAction")[0].params["action"] == "typing"
    # One structured line per update, with ids and latency, never the text.
    (line,) = bot.fake.wait_for(
        lambda: [
            e
            for e in bot.log_lines()
            if e.get("event") == "update_answered" and e.get("chat_id") == 102
        ]
    )
    assert (
        line["outcome"] == "positive"
        and line["chat_id"] == 102
        and line["job_id"]
        and line["latency_ms"] > 0
    )
    assert text not in bot.log.read_text()


def test_a_message_of_several_sentences_gets_each_sentence_marked(bot: Bot) -> None:
    sentences = ["A wonderful, superb film!", "The plot was dull & boring.", "See it <soon>"]
    text = "  ".join(sentences)
    _, reply = bot.ask(131, text)
    visible = check_text(reply["text"], "HTML")
    head, body = visible.split("\n\n")[:2]
    assert head.startswith(("👍 Positive", "👎 Negative", "⚖️ Mixed", "😐 Neutral", "🤷 Not sure"))
    marks = {"👍", "👎", "😐"}
    for sentence in sentences:  # each sentence, as written, after its own mark
        at = body.index(sentence)
        assert body[at - 2] in marks and body[at - 1] == " "
    assert body.replace("👍 ", "").replace("👎 ", "").replace("😐 ", "") == text


def test_a_review_in_another_language_is_answered_in_it_without_a_label(bot: Bot) -> None:
    cases = {
        "de": ("Der Film war wirklich langweilig und viel zu lang.", "nur Englisch"),
        "ru": ("Фильм был очень скучным и слишком длинным.", "только по-английски"),
        "zh": ("这部电影非常无聊，而且太长了。", "只能读英文"),
    }
    for chat, (language, (text, own)) in enumerate(cases.items(), start=171):
        _, reply = bot.ask(chat, text)
        visible = check_text(reply["text"], "HTML")
        assert visible.startswith(f"🌐 {language}"), visible
        assert own in visible and "I read English only" in visible
        assert "Positive" not in visible and "Negative" not in visible
        assert not reply.get("reply_markup"), "no buttons to vote on a label it did not give"
    lines = bot.fake.wait_for(
        lambda: (
            [
                e
                for e in bot.log_lines()
                if e.get("event") == "update_answered" and e.get("outcome") == "not_english"
            ]
            or None
        )
    )
    assert lines


def test_markup_in_a_review_is_escaped(bot: Bot) -> None:
    text = "<script>alert('x')</script> Tom & Jerry was a terrible, boring mess &amp; <b>awful"
    _, reply = bot.ask(103, text)
    visible = check_text(reply["text"], "HTML")  # the fake refuses anything Telegram refuses
    assert "<script>alert('x')</script> Tom & Jerry" in visible
    assert "&amp; <b>" in visible  # the user's own entity and tag stay text
    assert visible.startswith("👎 Negative")


def test_a_10000_character_review_is_analysed_and_the_reply_fits(bot: Bot) -> None:
    text = ("The plot was dull and the acting poor & wooden. " * 210)[:10_000]
    assert len(text) == 10_000
    _, reply = bot.ask(104, text)
    visible = check_text(reply["text"], "HTML")
    assert len(visible.encode("utf-16-le")) // 2 <= 4096
    assert visible.startswith("👎 Negative")
    assert "shortened here to fit one message" in visible


def test_stickers_and_edits_and_commands_for_other_bots(bot: Bot) -> None:
    sticker = bot.fake.send_sticker(105)
    del sticker
    reply = bot.fake.wait_for(
        lambda: [m for m in bot.fake.messages.values() if "only read text" in m["text"]]
    )
    assert reply[0]["chat"]["id"] == 105
    other = bot.fake.message(105, "/help@other_bot")
    bot.fake.push("message", other)
    ours = bot.fake.message(105, "/help@sentiment_test_bot")
    bot.fake.push("message", ours)
    assert "Example" in bot.final_reply(ours["message_id"])["text"]
    time.sleep(0.5)
    assert bot.fake.replies_to(other["message_id"]) == []  # not ours: ignored
    # An edited message is analysed again (a fixed typo gets a fresh answer).
    original = bot.fake.message(105, "A superb film")
    bot.fake.push("message", original)
    bot.final_reply(original["message_id"])
    edited = {**original, "text": "An awful, boring film", "edit_date": int(time.time())}
    bot.fake.push("edited_message", edited)

    def negative_reply() -> Any:
        return [r for r in bot.fake.replies_to(original["message_id"]) if "Negative" in r["text"]]

    assert bot.fake.wait_for(negative_reply)


def test_group_analyze_command_and_reply(bot: Bot) -> None:
    group = {"chat_type": "group", "chat_id": -500}
    plain = bot.fake.message(106, "Just chatting about a wonderful film", **group)
    bot.fake.push("message", plain)
    _, inline = bot.ask(107, "/analyze What a dull, terrible waste of time", **group)
    assert "Negative" in inline["text"]
    _, replied = bot.ask(107, "/analyze", reply_to=plain, **group)
    assert "Positive" in replied["text"] and "wonderful" in replied["text"]
    _, usage = bot.ask(107, "/analyze", **group)
    assert "reply to a message" in usage["text"]
    assert bot.fake.replies_to(plain["message_id"]) == []  # plain group chatter is not a review


def test_rate_limit_answers_politely_once_and_spares_other_users(bot: Bot) -> None:
    for i in range(3):  # BOT_RATE_PER_MINUTE=3
        _, reply = bot.ask(108, f"A superb film, take {i}")
        assert "Positive" in reply["text"]
    _, limited = bot.ask(108, "A superb film, take 4")
    assert "faster than I can read" in limited["text"]
    flood = [bot.fake.send_text(108, f"flood {i}") for i in range(1000)]  # one user floods
    _, other = bot.ask(109, "A superb film")
    assert "Positive" in other["text"]

    def flood_logged() -> bool:
        logged = {
            e.get("update_id") for e in bot.log_lines() if e.get("event") == "update_rate_limited"
        }
        return logged >= set(flood)  # every update accounted for, none lost

    assert bot.fake.wait_for(flood_logged, timeout=60)
    assert len([m for m in bot.fake.messages.values() if "faster" in m["text"]]) == 1
    assert bot.proc.poll() is None  # still running


def test_the_next_review_is_welcome_as_soon_as_the_answer_is_visible(bot: Bot) -> None:
    """The in-flight slot is freed when the worker answered, not when Telegram confirmed the
    edit: a user who replies the moment they see the answer is not told "one at a time"."""
    bot.fake.edit_delay_s = 1.5
    try:
        for i in range(2):
            _, reply = bot.ask(110, f"A superb film, part {i}")
            assert "Positive" in reply["text"], reply["text"]
    finally:
        bot.fake.edit_delay_s = 0.0


def test_allowlist_and_worker_down_timeout(system: Any) -> None:
    url, env, tmp = system
    restricted = {
        **env,
        "REDIS_URL": url.rsplit("/", 1)[0] + "/3",  # no worker listens on this database
        "BOT_ALLOWED_USERS": "201",
        "BOT_TIMEOUT_S": "1",
        "LOG_LEVEL": "DEBUG",  # the most talkative level must not leak the token either
    }
    for bot in _start_bot(restricted, tmp, "restricted"):
        _, refused = bot.ask(202, "A superb film")
        assert "private" in refused["text"]
        _, busy = bot.ask(201, "A superb film")  # no worker: "busy" once BOT_TIMEOUT_S passed
        assert "busy" in busy["text"]
        _, help_ = bot.ask(201, "/help")  # the bot keeps running
        assert "Example" in help_["text"]

        def timed_out(bot: Bot = bot) -> bool:
            return any(e.get("outcome") == "timeout" for e in bot.log_lines())

        assert bot.fake.wait_for(timed_out)
        text = bot.log.read_text()
        assert "getUpdates" in text  # python-telegram-bot's own DEBUG lines are there
        assert TOKEN not in text and TOKEN.split(":")[1] not in text


def test_missing_or_placeholder_token_fails_at_start_with_one_line() -> None:
    for token in ("", "your-bot-token-here"):
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": token, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-m", "bot"], env=env, cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 2
        assert done.stderr.startswith("sentiment-bot: TELEGRAM_BOT_TOKEN")
        assert len(done.stderr.strip().splitlines()) == 1


def test_redis_restarting_while_the_bot_waits_gives_busy_and_the_job_is_cancelled(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    """No worker: the bot waits on the result stream; Redis is killed and comes back."""
    from redis import Redis

    server = RedisServer(tmp_path / "redis", appendfsync="always")  # the queued job survives
    server.start()
    try:
        env = {
            **env_for(server.url, tiny_store),
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "BOT_TIMEOUT_S": "60",
        }
        for bot in _start_bot(env, tmp_path, "restart"):
            message = bot.fake.message(301, "A superb film")
            bot.fake.push("message", message)
            conn = Redis.from_url(server.url)
            queue = "rq:queue:sentiment-interactive"
            bot.fake.wait_for(lambda c=conn, q=queue: c.llen(q) == 1, timeout=30)
            (job_id,) = [x.decode() for x in conn.lrange(queue, 0, -1)]
            server.kill()
            busy = bot.final_reply(message["message_id"], timeout=30)
            assert "busy" in busy["text"]  # not "Analysing…" forever
            server.start()
            conn = Redis.from_url(server.url)
            key = f"rq:job:{job_id}"
            assert bot.fake.wait_for(lambda c=conn, k=key: not c.exists(k), 60)
            assert conn.llen(queue) == 0  # cancelled: its text is gone from Redis
            events = [e.get("event") for e in bot.log_lines()]
            assert "redis_failed" in events and bot.proc.poll() is None
    finally:
        server.stop()


def test_a_token_the_api_rejects_is_never_printed(tmp_path: Path) -> None:
    """python-telegram-bot puts the token in InvalidToken's message; no exit path prints it."""
    rejected = "987654321:AAtheApiRejectsThisOne_0123456789abcdef"
    with RedisServer.temporary() as server, FakeTelegramServer() as fake:  # it accepts TOKEN only
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": rejected,
            "TELEGRAM_API_URL": fake.url,
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "json",
            "REDIS_URL": server.url,
            "FEEDBACK_SALT": TEST_SALT,
        }
        done = subprocess.run(
            [sys.executable, "-m", "bot"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-2000:]
    assert rejected not in output and rejected.split(":")[1] not in output
    assert done.stderr.strip().splitlines()[-1].startswith("sentiment-bot: the Bot API server")


def test_a_top_words_setting_out_of_range_is_refused_at_start() -> None:
    """BOT_TOP_WORDS=101 used to be accepted and then turn every review into "workers busy"."""
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "BOT_TOP_WORDS": "101",
        "PYTHONPATH": str(REPO),
        "FEEDBACK_SALT": TEST_SALT,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "sentiment-bot: BOT_TOP_WORDS must be <= 100, got 101"
