"""User feedback on answers: stored durably in Redis, one vote per user per message.

Every vote is appended to a Redis stream (``sentiment:feedback``; AOF-persisted in compose)
carrying the text, the label the user says is right, the label the model gave, the model version
that answered, the hashed user id, the source (bot, api, import) and the time.  A later vote of
the same user on the same message replaces the earlier: a hash maps ``message|user`` to the
stream entry that counts, and readers keep only those entries.

The bot keeps an answered text only briefly (``ANSWER_TTL_S``, for the buttons under the answer);
the text becomes durable only when feedback is given on it.

Abuse: votes per user per minute are limited (``FEEDBACK_RATE_PER_MINUTE``), user ids are stored
as keyed hashes (``FEEDBACK_SALT``), and ``training_set`` keeps at most ``max_per_user`` of one
user's latest votes, so no single user can steer a training run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from shared.schema import LABELS, review_error

STREAM_KEY = "sentiment:feedback"
LATEST_KEY = "sentiment:feedback:latest"
ANSWER_KEY = "sentiment:answer:{}"
RATE_KEY = "sentiment:feedback:rate:{}"
#: How long the bot keeps an answer's text for its buttons (said in /help).
ANSWER_TTL_S = 48 * 3600
#: The stream is trimmed (approximately) beyond this many votes.
STREAM_MAX = 1_000_000
DEFAULT_RATE_PER_MINUTE = 20
DEFAULT_MAX_PER_USER = 50
SOURCES = ("bot", "api", "import")


class FeedbackError(ValueError):
    """A vote that cannot be stored (bad label, bad text, unknown or foreign answer...)."""


class RateLimited(FeedbackError):
    """This user voted too often in the last minute."""


def warn_if_default_salt() -> None:
    """Telegram ids are short numbers: with the built-in salt anyone could reverse a pseudonym
    by trying them all.  Components that store votes say so at start."""
    if not os.environ.get("FEEDBACK_SALT", "").strip():
        import structlog

        structlog.get_logger(__name__).warning(
            "feedback_salt_default",
            action="set FEEDBACK_SALT to a secret: user pseudonyms are reversible without one",
        )


def hash_user(raw: object, salt: str | None = None) -> str:
    """A stable pseudonym for a user id (HMAC-SHA256 with ``FEEDBACK_SALT``), 16 hex chars."""
    key = (salt if salt is not None else os.environ.get("FEEDBACK_SALT", "")) or "review-sentiment"
    return hmac.new(key.encode(), str(raw).encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Feedback:
    """One vote: ``label`` is what the user says is right; ``predicted`` what the model said."""

    text: str
    label: str
    predicted: str
    model_version: str
    user: str
    message: str
    source: str
    at: float

    @property
    def agreed(self) -> bool:
        return self.label == self.predicted

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agreed": self.agreed}


def check(item: Feedback) -> None:
    """FeedbackError unless the vote follows the contract."""
    if item.label not in LABELS:
        raise FeedbackError(f"label must be one of {', '.join(LABELS)}, got {item.label!r}")
    if item.predicted not in (*LABELS, ""):
        raise FeedbackError(f"predicted label must be one of {', '.join(LABELS)}")
    error = review_error(item.text)
    if error is not None:
        raise FeedbackError(error)
    if item.source not in SOURCES:
        raise FeedbackError(f"source must be one of {', '.join(SOURCES)}")
    if not item.message or len(item.message) > 200 or not item.user:
        raise FeedbackError("a vote needs a message key (at most 200 characters) and a user")
    if len(item.model_version) > 200:
        raise FeedbackError("model_version is too long")


def allow(conn: Redis, user: str, per_minute: int = DEFAULT_RATE_PER_MINUTE) -> None:
    """Count a vote of ``user`` in a sliding minute (on Redis's clock); RateLimited beyond
    ``per_minute`` (refused votes do not count)."""
    key = RATE_KEY.format(user)
    with conn.pipeline() as pipe:
        pipe.time()
        now_s, now_us = pipe.execute()[0]
    now = now_s + now_us / 1e6
    member = secrets.token_hex(8)
    with conn.pipeline() as pipe:  # MULTI: trim, count and add as one step
        pipe.zremrangebyscore(key, 0, now - 60)
        pipe.zcard(key)
        pipe.zadd(key, {member: now})
        pipe.expire(key, 61)
        _, count, _, _ = pipe.execute()
    if int(count) >= per_minute:
        conn.zrem(key, member)  # a refused vote does not count
        raise RateLimited(f"at most {per_minute} votes a minute; try again shortly")


def record(conn: Redis, item: Feedback) -> str:
    """Store a vote (it replaces this user's earlier vote on the same message); its stream id."""
    check(item)
    fields = {k: str(v) for k, v in asdict(item).items()}
    with conn.pipeline() as pipe:
        pipe.xadd(STREAM_KEY, fields, maxlen=STREAM_MAX, approximate=True)  # type: ignore[arg-type]
        entry_id = pipe.execute()[0]
    entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    conn.hset(LATEST_KEY, f"{item.message}|{item.user}", entry)
    return entry


def _decode(raw: Mapping[Any, Any]) -> Feedback:
    d = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    return Feedback(
        text=d["text"],
        label=d["label"],
        predicted=d.get("predicted", ""),
        model_version=d.get("model_version", ""),
        user=d["user"],
        message=d["message"],
        source=d.get("source", "import"),
        at=float(d["at"]),
    )


def entries(conn: Redis, since: str = "-") -> Iterator[tuple[str, Feedback]]:
    """Every vote that counts (a user's latest on each message), oldest first."""
    latest = {v.decode() for v in conn.hvals(LATEST_KEY)}  # type: ignore[union-attr]
    start = since
    while True:
        batch: Any = conn.xrange(STREAM_KEY, min=start, max="+", count=1000)
        if not batch:
            return
        for raw_id, raw in batch:
            entry = raw_id.decode()
            if entry in latest:
                yield entry, _decode(raw)
        last = batch[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def count_since(conn: Redis, since: float) -> int:
    """Votes that count and arrived after ``since`` (unix time)."""
    return sum(1 for _, item in entries(conn, f"{int(since * 1000)}-0"))


def training_set(items: list[Feedback], max_per_user: int = DEFAULT_MAX_PER_USER) -> list[Feedback]:
    """At most ``max_per_user`` of each user's latest votes, oldest first."""
    per_user: dict[str, list[Feedback]] = {}
    for item in sorted(items, key=lambda f: f.at, reverse=True):
        kept = per_user.setdefault(item.user, [])
        if len(kept) < max_per_user:
            kept.append(item)
    return sorted((f for kept in per_user.values() for f in kept), key=lambda f: f.at)


def split_by_time(
    items: list[Feedback], holdout_fraction: float, min_holdout: int
) -> tuple[list[Feedback], list[Feedback]]:
    """``(train, held out)``: the newest ``holdout_fraction`` is held out for evaluation, when
    that is at least ``min_holdout`` votes; otherwise nothing is held out."""
    ordered = sorted(items, key=lambda f: f.at)
    n = int(len(ordered) * holdout_fraction)
    if n < min_holdout:
        return ordered, []
    return ordered[:-n], ordered[-n:]


def stats(items: list[Feedback]) -> dict[str, Any]:
    """Counts per model version and source, and how often users agreed with the model."""
    by_version: dict[str, dict[str, int]] = {}
    for item in items:
        row = by_version.setdefault(item.model_version or "?", {"votes": 0, "agreed": 0})
        row["votes"] += 1
        row["agreed"] += int(item.agreed)
    for row in by_version.values():
        row["agreement"] = round(row["agreed"] / row["votes"], 4)  # type: ignore[assignment]
    agreed = sum(1 for f in items if f.agreed)
    return {
        "votes": len(items),
        "users": len({f.user for f in items}),
        "agreement": round(agreed / len(items), 4) if items else None,
        "by_source": {s: sum(1 for f in items if f.source == s) for s in SOURCES},
        "by_version": by_version,
    }


# -- answers the bot keeps for its buttons ------------------------------------------------------
def remember_answer(
    conn: Redis,
    text: str,
    label: str,
    model_version: str,
    chat_id: int,
    ttl: int = ANSWER_TTL_S,
) -> str:
    """Keep an answer for its feedback buttons; returns the token the buttons carry."""
    token = secrets.token_urlsafe(12)
    conn.set(
        ANSWER_KEY.format(token),
        json.dumps(
            {"text": text, "label": label, "model_version": model_version, "chat_id": chat_id}
        ),
        ex=ttl,
    )
    return token


def answer_of(conn: Redis, token: str) -> dict[str, Any] | None:
    """The answer a button names, or None when it expired or never existed."""
    if not token or len(token) > 32:
        return None
    raw: Any = conn.get(ANSWER_KEY.format(token))
    return json.loads(raw) if raw else None


def other_label(label: str) -> str:
    return LABELS[1 - LABELS.index(label)]
