"""The loop from a user's "wrong" to a new served version, with real processes: the bot
(python-telegram-bot against the fake Bot API), a redis-server, a worker, and the trainer.

* answer -> "Wrong" pressed -> vote stored -> ``sentiment-trainer --once`` (tiny corpus, seconds)
  -> the challenger learnt the correction, so it is published -> the worker serves it -> /model
  shows it;
* a challenger made worse on purpose (a flood of flipped labels) is refused: LATEST unchanged,
  the reason logged and announced;
* one trainer at a time; a trainer SIGKILLed mid-run publishes nothing and its lock lapses; a
  Redis restart mid-run publishes nothing half-done and the next run succeeds;
* bad button presses (forged, stale, foreign) and a flood of votes are answered and ignored.
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

from bench.fake_telegram import TOKEN, FakeTelegram, FakeTelegramServer
from shared import announcements, feedback
from shared.local import RedisServer, start, start_worker, stop_processes, wait_for_workers
from shared.store import ModelStore
from tests.conftest import REPO, copy_store, env_for

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

#: Words the tiny model never saw: its answer on them is a guess the user corrects.
UNSEEN = "Zorblax quibbleflop snarfwidget glimmertoad."


def trainer_argv(corpus: dict[str, Path]) -> list[str]:
    """``sentiment-trainer --once`` with the tiny recipe of the test fixtures."""
    return [
        "--once",
        "--data",
        str(corpus["train"]),
        "--test-data",
        str(corpus["test"]),
        "--arch",
        "kim_ngram",
        "--vocab-size",
        "200",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--patience",
        "2",
        "--seed",
        "3",
        "--embed-dim",
        "16",
        "--filters",
        "16",
        "--kernel-sizes",
        "1,2,3",
    ]


TRAINER_ENV = {
    "TRAINER_FEEDBACK_REPEAT": "40",
    "TRAINER_TOLERANCE_TEST": "0.03",
    "TRAINER_TOLERANCE_SHORT": "0.05",
    "TRAINER_LOCK_TTL_S": "4",
    "TRAINER_REPORT_LIMIT": "200",
    "FEEDBACK_MAX_PER_USER": "100000",
}


def start_trainer(
    env: dict[str, str], corpus: dict[str, Path], log: Path, argv: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """``sentiment-trainer`` (default: the tiny recipe, ``--once``), its output in ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker.training.commands.trainer", *(argv or trainer_argv(corpus))],
        env={**env, **TRAINER_ENV},
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def run_trainer(
    env: dict[str, str], corpus: dict[str, Path], log: Path, argv: list[str] | None = None
) -> int:
    return start_trainer(env, corpus, log, argv).wait(timeout=600)


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            out.append(json.loads(line))
    return out


class Loop:
    def __init__(self, fake: FakeTelegram, conn: Redis, env: dict[str, str], store: ModelStore):
        self.fake, self.conn, self.env, self.store = fake, conn, env, store

    def ask(self, user_id: int, text: str, chat_id: int | None = None) -> dict[str, Any]:
        """Send a review; the bot's final answer (with its buttons)."""
        message = self.fake.message(user_id, text, chat_id=chat_id)
        self.fake.push("message", message)

        def final() -> Any:
            done = [
                r
                for r in self.fake.replies_to(message["message_id"])
                if "Analysing" not in r["text"]
            ]
            return done[0] if done and self.fake.buttons(done[0]) else None

        return dict(self.fake.wait_for(final, timeout=60))

    def model_reply(self, user_id: int) -> str:
        """The bot's answer to /model."""
        model = self.fake.message(user_id, "/model")
        self.fake.push("message", model)
        return str(
            self.fake.wait_for(lambda: self.fake.replies_to(model["message_id"]), 30)[0]["text"]
        )

    def press(self, user_id: int, answer: dict[str, Any], which: str) -> str:
        """Press Right/Wrong; the text of the bot's callback answer."""
        button = next(b for b in self.fake.buttons(answer) if which in b["text"])
        query = self.fake.press(user_id, answer, button["callback_data"])
        got = self.fake.wait_for(lambda: self.fake.callback_answers.get(query), timeout=30)
        return str(got["text"])


@pytest.fixture
def loop(tiny_store: ModelStore, tmp_path: Path) -> Iterator[tuple[Loop, RedisServer, Path]]:
    store = copy_store(tiny_store, tmp_path / "models")
    with RedisServer.temporary() as server, FakeTelegramServer() as fake:
        env = {
            **env_for(server.url, store),
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": fake.url,
            "FEEDBACK_RATE_PER_MINUTE": "5",
            "BOT_RATE_PER_MINUTE": "100",
        }
        worker_log = tmp_path / "worker.log"
        worker = start_worker(env, "loop-worker", worker_log)
        bot = start("bot", [], env, tmp_path / "bot.log")
        try:
            wait_for_workers(server.url, [worker], [worker_log])
            fake.wait_for(lambda: fake.calls_to("deleteWebhook"), timeout=60)
            yield Loop(fake, Redis.from_url(server.url), env, store), server, tmp_path
        finally:
            stop_processes([bot, worker], timeout=15)


def test_wrong_pressed_then_the_trainer_publishes_a_version_that_learnt_it_and_it_is_served(
    loop: tuple[Loop, RedisServer, Path], corpus: dict[str, Path]
) -> None:
    lp, _, tmp = loop
    answer = lp.ask(31, UNSEEN)
    text = answer["text"]  # "👍 Positive", or "leaning positive" (not sure, mixed, neutral)
    said = "positive" if "Positive" in text or "leaning positive" in text else "negative"
    right = feedback.other_label(said)
    assert lp.press(31, answer, "Wrong") == f"Thanks! Noted: {right}."
    votes = [f for _, f in feedback.entries(lp.conn)]
    assert [(v.text, v.label, v.predicted, v.source) for v in votes] == [
        (UNSEEN, right, said, "bot")
    ]
    assert votes[0].model_version == "tiny/v0001" and "31" not in votes[0].user

    log = tmp / "trainer.log"
    assert run_trainer(lp.env, corpus, log) == 0, log.read_text()[-3000:]
    (published,) = events(log, "trainer_published")
    assert published["version"] == "v0002" and published["champion"] == "v0001"
    learnt = published["numbers"]["learnt"]
    assert learnt["champion"] == 0.0 and learnt["challenger"] == 1.0  # it fixed the correction
    assert learnt["informational"] and "feedback" not in published["numbers"]  # one voter only
    assert lp.store.latest() == "v0002"
    manifest = lp.store.resolve("v0002").manifest
    assert manifest["decision"]["champion"] == "v0001"
    assert manifest["data"]["extra"]["n"] == 1
    assert (lp.store.base / "v0002" / "analysis" / "report.html").is_file()  # --compare report

    # The worker serves it (hot reload), it answers the correction right, /model shows it.
    again = lp.ask(32, UNSEEN)
    assert right.capitalize() in again["text"] and "v0002" in again["text"]
    shown = lp.model_reply(32)
    assert "v0002" in shown and "pt on" in shown


def test_a_challenger_made_worse_on_purpose_is_refused_and_latest_stays(
    loop: tuple[Loop, RedisServer, Path], corpus: dict[str, Path]
) -> None:
    lp, _, tmp = loop
    # Corrections imported in bulk (one bad line reported, the rest stored) ...
    corrections = tmp / "corrections.jsonl"
    corrections.write_text(
        json.dumps({"text": "Dreadful, a waste of time.", "label": "negative"})
        + "\n"
        + json.dumps({"text": "", "label": "positive"})
        + "\n"
        + json.dumps({"text": "A joy from start to end.", "label": "positive"})
        + "\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.feedback", "import", str(corrections)],
        env=lp.env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "2 corrections stored, 1 refused" in done.stdout, done.stderr
    assert "corrections.jsonl:2" in done.stderr
    # ... and a recipe crippled on purpose (a 4-word vocabulary cannot see sentiment words).
    argv = trainer_argv(corpus)
    argv[argv.index("--vocab-size") + 1] = "4"
    log = tmp / "trainer.log"
    assert run_trainer(lp.env, corpus, log, argv) == 3, log.read_text()[-3000:]  # refused
    (refused,) = events(log, "challenger_refused")
    assert any(r.startswith("test:") for r in refused["reasons"]), refused
    assert lp.store.latest() == "v0001" and lp.store.versions() == ["v0001"]
    decision = announcements.last_decision(lp.conn)
    assert decision["published"] == "0" and "refused" in decision["summary"]
    shown = lp.model_reply(33)
    assert "tiny/v0001" in shown and "refused" in shown


def test_one_trainer_at_a_time_and_a_killed_trainer_publishes_nothing(
    loop: tuple[Loop, RedisServer, Path], corpus: dict[str, Path]
) -> None:
    from worker.training.lock import LOCK_KEY

    lp, server, tmp = loop
    lp.conn.set(LOCK_KEY, "someone-else", px=60_000)
    assert run_trainer(lp.env, corpus, tmp / "locked.log") == 4  # exits cleanly, nothing done
    lp.conn.delete(LOCK_KEY)

    # SIGKILL in the middle of training: no version, no staging left in the store, and the
    # lock lapses by itself (TRAINER_LOCK_TTL_S=4).
    log = tmp / "killed.log"
    proc = start_trainer(lp.env, corpus, log)
    lp.fake.wait_for(lambda: events(log, "epoch_finished"), timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lp.conn.get(LOCK_KEY) is not None  # held by the dead trainer ...
    lp.fake.wait_for(lambda: lp.conn.get(LOCK_KEY) is None, timeout=30)  # ... until it lapses
    assert lp.store.versions() == ["v0001"] and lp.store.latest() == "v0001"
    assert not list(lp.store.base.glob(".staging-*"))

    # Redis restarted in the middle of a run: nothing half-published; the next run succeeds.
    log = tmp / "restarted.log"
    proc = start_trainer(lp.env, corpus, log)
    lp.fake.wait_for(lambda: events(log, "epoch_finished"), timeout=120)
    server.kill()
    time.sleep(1.0)
    server.start()
    code = proc.wait(timeout=300)
    versions = lp.store.versions()
    assert code in (0, 2, 3), log.read_text()[-2000:]
    assert all((lp.store.base / v / "manifest.json").is_file() for v in versions)
    assert not list(lp.store.base.glob(".staging-*"))
    assert run_trainer(lp.env, corpus, tmp / "next.log") == 0, (tmp / "next.log").read_text()[
        -2000:
    ]
    assert lp.store.latest() == lp.store.versions()[-1] != "v0001"


def test_forged_stale_and_foreign_presses_and_a_vote_flood_are_answered_and_ignored(
    loop: tuple[Loop, RedisServer, Path],
) -> None:
    lp, _, _ = loop
    answer = lp.ask(41, "A superb, wonderful film.")
    assert lp.press(41, answer, "Right") == "Thanks! Noted: positive."
    assert lp.press(41, answer, "Wrong") == "Thanks! Noted: negative."  # replaces the first
    votes = [f for _, f in feedback.entries(lp.conn)]
    assert [v.label for v in votes] == ["negative"]

    def raw_press(user: int, message: dict[str, Any], data: str) -> str:
        query = lp.fake.press(user, message, data)
        return str(lp.fake.wait_for(lambda: lp.fake.callback_answers.get(query), 30)["text"])

    assert raw_press(41, answer, "fb:nonsense") == "Unknown button."
    assert (
        raw_press(41, answer, "fb:" + "A" * 16 + ":w")
        == "This answer is too old to rate (answers are kept 48 hours)."
    )
    assert raw_press(41, answer, "rm -rf /") == "Unknown button."
    token = lp.fake.buttons(answer)[0]["callback_data"].split(":")[1]
    foreign = {**answer, "chat": {"id": 999, "type": "private"}}
    assert raw_press(999, foreign, f"fb:{token}:w") == "This button does not belong to this chat."
    # Stale: the kept answer expired.
    lp.conn.delete(feedback.ANSWER_KEY.format(token))
    assert raw_press(41, answer, f"fb:{token}:r").startswith("This answer is too old")
    # A flood from one user: FEEDBACK_RATE_PER_MINUTE=5 in this bot (2 votes spent above).
    flood = lp.ask(41, "An awful, boring film.")
    replies = [lp.press(41, flood, "Right" if i % 2 else "Wrong") for i in range(6)]
    assert replies.count("Too many votes at once; please try again in a minute.") == 3
    assert len([f for _, f in feedback.entries(lp.conn)]) == 2  # one per answer, at most


def test_a_challenger_poisoned_by_one_voter_is_refused_by_the_canary(
    loop: tuple[Loop, RedisServer, Path], corpus: dict[str, Path]
) -> None:
    """100 votes of one token, each a clearly positive review that mentions "nolan", labelled
    negative.  The challenger learns "nolan means negative"; the fixed test sets barely show it
    (12 of their 3,000 reviews mention the name), the canary of texts nobody voted about that
    share the votes' words does.  The test and sentence tolerances are the loop's wide ones (a
    retrained tiny model moves a few points by itself), the canary's its defaults: the canary
    alone refuses the challenger."""
    import csv
    import random

    from tests.conftest import synthetic_review

    lp, _, tmp = loop
    rng = random.Random(7)

    def mentioning(word: str) -> str:
        words = synthetic_review(rng, 1).rstrip(".").split()
        words.insert(rng.randrange(len(words) + 1), word)
        return " ".join(words) + "."

    test = tmp / "test-3000.csv"
    with test.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        for i in range(3000):
            label = i % 2
            text = mentioning("nolan") if label and i % 250 == 1 else synthetic_review(rng, label)
            writer.writerow([text, "positive" if label else "negative"])
    mallory = feedback.hash_user("api:mallory")
    for i in range(100):
        feedback.record(
            lp.conn,
            feedback.Feedback(
                text=mentioning("nolan"),
                label="negative",
                predicted="positive",
                model_version="tiny/v0001",
                user=mallory,
                message=f"api:mallory:{i}",
                source="api",
                at=time.time(),
            ),
        )
    argv = trainer_argv(corpus)
    argv[argv.index("--test-data") + 1] = str(test)
    defaults = {k: v for k, v in TRAINER_ENV.items() if "REPEAT" not in k}
    log = tmp / "poisoned.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.training.commands.trainer", *argv],
        env={
            **lp.env,
            **defaults,
            "FEEDBACK_MAX_PER_USER": "50",
            "TRAINER_TOLERANCE_TEST": "0.06",
            "TRAINER_TOLERANCE_SHORT": "0.06",
        },
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    assert proc.wait(timeout=600) == 3, log.read_text()[-3000:]
    (refused,) = events(log, "challenger_refused")
    numbers = refused["numbers"]
    reasons = refused["reasons"]
    assert any(r.startswith("canary 'nolan'") for r in reasons), reasons
    assert all(r.startswith("canary") for r in reasons), reasons  # test and sentences passed
    target = numbers["canary"]["groups"]["nolan"]
    assert target["challenger"] <= target["champion"] - 0.5  # it was poisoned, and it showed
    assert numbers["learnt"]["informational"]  # the votes it fitted decide nothing
    assert lp.store.latest() == "v0001" and lp.store.versions() == ["v0001"]


def test_a_failing_cycle_neither_crashes_the_trainer_nor_repeats_until_something_changes(
    tiny_store: ModelStore, corpus: dict[str, Path], tmp_path: Path
) -> None:
    """The store cannot be written (here: MODEL_DIR is a file): the long-running trainer logs
    the failure once, stays up, and does not retrain the same votes at every check."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    with RedisServer.temporary() as server:
        conn = Redis.from_url(server.url)
        feedback.record(
            conn,
            feedback.Feedback(
                text=UNSEEN,
                label="positive",
                predicted="negative",
                model_version="tiny/v0001",
                user=feedback.hash_user("tg:5"),
                message="tg:x",
                source="bot",
                at=time.time(),
            ),
        )
        env = {
            **env_for(server.url, tiny_store),
            "MODEL_DIR": str(blocked),
            "TRAINER_MIN_FEEDBACK": "1",
            "TRAINER_CHECK_S": "1",
        }
        log = tmp_path / "trainer.log"
        argv = [a for a in trainer_argv(corpus) if a != "--once"]
        proc = start_trainer(env, corpus, log, argv)
        try:
            deadline = time.monotonic() + 120
            while not events(log, "trainer_cycle_failed"):
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)
            time.sleep(5)  # five more checks
            assert proc.poll() is None  # still up: no crash loop
            assert len(events(log, "trainer_cycle_failed")) == 1  # and no retraining loop
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
