"""The feedback store (fakeredis): one vote per voter and message, budgets, expiry, rate limit;
the trainer's rules for votes (a cap per voter, voters held out whole, the canary)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from shared import feedback
from shared.feedback import Feedback, FeedbackError, RateLimited


def vote(text: str = "A fine film.", label: str = "positive", **kw: object) -> Feedback:
    base = Feedback(
        text=text,
        label=label,
        predicted="negative",
        model_version="tiny/v0001",
        user=feedback.hash_user("tg:1"),
        message="tg:abc",
        source="bot",
        at=time.time(),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def conn() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_later_vote_replaces_the_earlier_one_of_the_same_user_on_the_same_message(
    conn: fakeredis.FakeRedis,
) -> None:
    feedback.record(conn, vote(label="positive"))
    feedback.record(conn, vote(label="negative"))  # changed their mind
    feedback.record(conn, vote(label="positive", user=feedback.hash_user("tg:2")))
    feedback.record(conn, vote(label="positive", message="tg:other"))
    counted = [f for _, f in feedback.entries(conn)]
    assert len(counted) == 3
    mine = [f for f in counted if f.message == "tg:abc" and f.user == feedback.hash_user("tg:1")]
    assert [f.label for f in mine] == ["negative"]
    assert conn.xlen(feedback.STREAM_KEY) == 3  # the replaced vote is gone, not kept


def test_every_feedback_key_expires_and_a_voter_keeps_at_most_their_budget(
    conn: fakeredis.FakeRedis,
) -> None:
    budget = feedback.Budget(max_stored=3, retention_s=3600)
    for i in range(3):
        feedback.record(conn, vote(message=f"m{i}"), budget)
    with pytest.raises(feedback.BudgetExceeded, match="3 votes"):
        feedback.record(conn, vote(message="m3"), budget)
    feedback.record(conn, vote(message="m1", label="negative"), budget)  # a change of mind fits
    other = vote(message="m3", user=feedback.hash_user("tg:2"))
    feedback.record(conn, other, budget)  # another voter has their own budget
    assert conn.xlen(feedback.STREAM_KEY) == 4
    for key in conn.keys("sentiment:feedback*"):
        assert 0 < conn.ttl(key) <= 3600, key
    # Texts far beyond a review are refused, not stored.
    with pytest.raises(FeedbackError, match="at most"):
        feedback.record(conn, vote(text="word " * 5000, user="someone"), budget)


def test_votes_older_than_the_retention_are_trimmed_and_their_budget_freed(
    conn: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = feedback.Budget(max_stored=2, retention_s=60)
    feedback.record(conn, vote(message="old1"), budget)
    feedback.record(conn, vote(message="old2"), budget)
    later = time.time() + 120
    monkeypatch.setattr(feedback.time, "time", lambda: later)
    feedback.record(conn, vote(message="new", at=later), budget)  # the old ones expired
    assert [f.message for _, f in feedback.entries(conn)] == ["new"]


def test_user_ids_are_pseudonyms_and_the_salt_changes_them() -> None:
    a, b = feedback.hash_user("tg:42", salt="one"), feedback.hash_user("tg:42", salt="two")
    assert a != b and "42" not in a and len(a) == 16
    assert feedback.hash_user("tg:42", salt="one") == a


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"label": "meh"}, "label"),
        ({"text": "   "}, "empty"),
        ({"text": "x" * (1 << 20)}, "longer"),
        ({"text": "bad\x00byte"}, "NUL"),
        ({"source": "email"}, "source"),
        ({"message": ""}, "message"),
        ({"message": "m" * 201}, "message"),
    ],
)
def test_bad_votes_are_refused_with_a_reason_and_nothing_is_stored(
    conn: fakeredis.FakeRedis, change: dict[str, object], reason: str
) -> None:
    with pytest.raises(FeedbackError, match=reason):
        feedback.record(conn, vote(**change))
    assert conn.xlen(feedback.STREAM_KEY) == 0


def test_the_rate_limit_is_a_moving_minute_shared_by_every_process(
    conn: fakeredis.FakeRedis,
) -> None:
    from shared.ratelimit import Limiter

    replicas = [Limiter(conn), Limiter(conn)]  # two API replicas on one Redis
    for i in range(3):
        feedback.allow(replicas[i % 2], "u1", per_minute=3)
    for replica in replicas:
        with pytest.raises(RateLimited) as refused:
            feedback.allow(replica, "u1", per_minute=3)
        assert 0 < refused.value.retry_after <= 60
    feedback.allow(replicas[0], "u2", per_minute=3)  # other voters are not affected


def test_one_voter_is_capped_in_a_training_set_and_voters_are_held_out_whole() -> None:
    from worker.training import votes

    now = time.time()
    flood = [vote(text=f"t{i}", user="flooder", message=f"m{i}", at=now + i) for i in range(100)]
    others = [vote(text=f"o{i}", user=f"u{i % 10}", message=f"o{i}", at=now + i) for i in range(30)]
    kept = votes.training_set(flood + others, max_per_user=10)
    assert sum(1 for f in kept if f.user == "flooder") == 10
    assert {f.text for f in kept if f.user == "flooder"} == {f"t{i}" for i in range(90, 100)}
    assert [f.at for f in kept] == sorted(f.at for f in kept)
    train, held = votes.split_by_voter(kept, 0.25, min_voters=3)
    held_voters = {f.user for f in held}
    assert len(held_voters) == 3 and not held_voters & {f.user for f in train}
    assert votes.split_by_voter(kept, 0.25, min_voters=3) == (train, held)  # stable
    assert votes.split_by_voter(flood, 0.25, min_voters=3) == (flood, [])  # one voter: none
    weights = votes.voter_weights(kept)
    flooder = sum(w for w, f in zip(weights, kept, strict=True) if f.user == "flooder")
    assert flooder == pytest.approx(1.0)  # ten votes weigh as one voter


def test_the_canary_holds_texts_nobody_voted_about_that_share_the_votes_words() -> None:
    import numpy as np

    from worker.training import votes

    pool = [
        f"the acting was {w} and the music {m}"
        for w in ("superb", "awful")
        for m in ("loud", "soft")
    ]
    pool += [f"filler text number {i} with the plot" for i in range(40)]
    pool += ["a superb cast"]  # voted on below: never in the canary
    labels = np.array([1, 1, 0, 0] + [1] * 40 + [1])
    poison = [vote(text="a superb cast", label="negative", message=f"p{i}") for i in range(5)]
    bird = votes.canary(poison, pool, labels)
    assert sorted(bird.texts) == sorted(pool[:2])  # "superb" texts; "a"/"cast" too common/absent
    assert set(bird.groups) == {"superb"} and "a superb cast" not in bird.texts


def test_stats_count_votes_per_version_and_the_agreement(conn: fakeredis.FakeRedis) -> None:
    feedback.record(conn, vote(label="negative", message="a"))  # agreed (predicted negative)
    feedback.record(conn, vote(label="positive", message="b"))  # disagreed
    feedback.record(conn, vote(label="positive", message="c", model_version="tiny/v0002"))
    report = feedback.stats([f for _, f in feedback.entries(conn)])
    assert report["votes"] == 3 and report["agreement"] == pytest.approx(1 / 3, abs=1e-4)
    assert report["by_version"]["tiny/v0001"] == {"votes": 2, "agreed": 1, "agreement": 0.5}
    assert report["by_source"]["bot"] == 3


def test_answers_for_buttons_expire_and_unknown_tokens_are_none(conn: fakeredis.FakeRedis) -> None:
    token = feedback.remember_answer(conn, "Great.", "positive", "tiny/v0001", chat_id=7, ttl=60)
    assert len(f"fb:{token}:w".encode()) <= 64  # Telegram's callback_data limit
    assert feedback.answer_of(conn, token) == {
        "text": "Great.",
        "label": "positive",
        "model_version": "tiny/v0001",
        "chat_id": 7,
    }
    assert 0 < conn.ttl(feedback.ANSWER_KEY.format(token)) <= 60
    assert feedback.answer_of(conn, "forged") is None
    assert feedback.answer_of(conn, "x" * 100) is None


@pytest.mark.redis_server
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_the_cli_imports_exports_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from shared.commands.feedback import main
    from shared.local import RedisServer

    src = tmp_path / "corrections.csv"
    src.write_text('review,sentiment\n"Loved it, truly.",positive\n"Dull.",negative\n"",positive\n')
    with RedisServer.temporary() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        assert main(["import", str(src)]) == 0
        captured = capsys.readouterr()
        assert "2 corrections stored, 1 refused" in captured.out
        assert "corrections.csv:" in captured.err
        assert main(["import", str(src)]) == 0  # again: the same votes, nothing added
        capsys.readouterr()
        out = tmp_path / "votes.jsonl"
        assert main(["export", "-o", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["label"] for r in rows) == ["negative", "positive"]
        assert all(r["source"] == "import" and r["id"] for r in rows)
        capsys.readouterr()
        assert main(["stats", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["votes"] == 2 and report["by_source"]["import"] == 2
        assert main(["stats"]) == 0
        assert "2 votes from 1 users" in capsys.readouterr().out


def test_the_salt_is_required_and_changes_every_pseudonym(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not feedback.salt_is_set({}) and not feedback.salt_is_set({"FEEDBACK_SALT": "  "})
    assert feedback.salt_is_set({"FEEDBACK_SALT": "s3cret"})
    monkeypatch.setenv("FEEDBACK_SALT", "s3cret")
    assert feedback.hash_user("tg:1") != feedback.hash_user("tg:1", salt="")
