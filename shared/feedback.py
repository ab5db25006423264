"""User feedback on answers: votes kept in Redis, one per voter and message, within budgets.

Every vote that counts is one entry of a Redis stream (``sentiment:feedback``) carrying the text,
the label the voter says is right, the label the model gave, the model version that answered,
the voter's pseudonym, the source (bot, api, import) and the time.  A later vote of the same
voter on the same message replaces the earlier one (the earlier entry is deleted), so the stream
holds exactly the votes that count.

**Who votes is never a field the caller fills.**  The voter is the Telegram user who pressed the
button (bot), the API token that sent the vote (API), or the file imported by an operator.  An
API token declared a *trusted feedback source* (a moderation tool, ``API_FEEDBACK_TRUSTED``) may
vote on behalf of its end users: then each (token, end user) is a voter of its own.

**Budgets**, all enforced when a vote is stored (``record``), in one Lua script:

* every key expires: votes are kept ``retention_s`` (``FEEDBACK_RETENTION_DAYS``), the stream is
  trimmed by age and capped at ``STREAM_MAX`` entries;
* each voter keeps at most ``max_stored`` votes at a time (``FEEDBACK_MAX_STORED_PER_VOTER``), a
  vote's text at most ``MAX_VOTE_CHARS`` characters;
* votes are refused while Redis uses more than ``memory_share`` of its ``maxmemory``
  (``FEEDBACK_MEMORY_SHARE``): feedback can never take the memory the queues need.

The rate of votes per voter is limited separately (``shared.ratelimit``), and the trainer keeps
at most ``FEEDBACK_MAX_PER_USER`` of one voter's votes (``worker.training.votes``).  Pseudonyms
are keyed hashes (``FEEDBACK_SALT``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from shared.ratelimit import Limiter
from shared.schema import LABELS, review_error

STREAM_KEY = "sentiment:feedback"
#: message|voter digest -> the stream entry of that voter's vote on that message.
VOTE_KEY = "sentiment:feedback:vote:{}"
#: A voter's stored votes (digests scored by time): the per-voter storage budget.
VOTER_KEY = "sentiment:feedback:voter:{}"
#: Before votes replaced their predecessors: ``message|user`` -> entry (read, never written).
LEGACY_LATEST_KEY = "sentiment:feedback:latest"
ANSWER_KEY = "sentiment:answer:{}"
#: How long the bot keeps an answer's text for its buttons (said in /help).
ANSWER_TTL_S = 48 * 3600
#: The stream is trimmed (approximately) beyond this many votes.
STREAM_MAX = 200_000
DEFAULT_RATE_PER_MINUTE = 20
DEFAULT_MAX_PER_USER = 50
DEFAULT_MAX_STORED = 500
DEFAULT_RETENTION_S = 180 * 24 * 3600
DEFAULT_MEMORY_SHARE = 0.5
#: The longest text a vote keeps (far beyond a Telegram message or a typical review).
MAX_VOTE_CHARS = 20_000
SOURCES = ("bot", "api", "import")
#: Entries written since votes replace their predecessors carry this field.
ENTRY_FORMAT = "2"

# KEYS: stream, vote key, voter set.  ARGV: now (s), retention (s), max stored, stream max,
# digest, then the entry's fields as name, value pairs.  Returns the new entry id, or an error
# reply "budget" when the voter already keeps their maximum of other votes.
_RECORD = """
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - retention)
if not redis.call('ZSCORE', KEYS[3], ARGV[5]) and
   redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then
  return redis.error_reply('budget')
end
local old = redis.call('GET', KEYS[2])
if old then redis.call('XDEL', KEYS[1], old) end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))
redis.call('XTRIM', KEYS[1], 'MINID', '~', tostring(math.floor((now - retention) * 1000)))
redis.call('EXPIRE', KEYS[1], retention)
redis.call('SET', KEYS[2], id, 'EX', retention)
redis.call('ZADD', KEYS[3], now, ARGV[5])
redis.call('EXPIRE', KEYS[3], retention)
return id
"""


class FeedbackError(ValueError):
    """A vote that cannot be stored (bad label, bad text, unknown or foreign answer...)."""


class RateLimited(FeedbackError):
    """This voter voted too often in the last minute."""

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceeded(FeedbackError):
    """This voter keeps the most votes allowed, or Redis has no room for feedback now."""


@dataclass(frozen=True)
class Budget:
    """How much feedback is kept, per voter and in all."""

    max_stored: int = DEFAULT_MAX_STORED
    retention_s: int = DEFAULT_RETENTION_S
    memory_share: float = DEFAULT_MEMORY_SHARE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Budget:
        from shared.config import env_float, env_int

        return cls(
            max_stored=env_int(env, "FEEDBACK_MAX_STORED_PER_VOTER", DEFAULT_MAX_STORED, 1),
            retention_s=86400
            * env_int(env, "FEEDBACK_RETENTION_DAYS", DEFAULT_RETENTION_S // 86400, 1),
            memory_share=env_float(env, "FEEDBACK_MEMORY_SHARE", DEFAULT_MEMORY_SHARE, 0.0, 1.0),
        )


def salt_is_set(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("FEEDBACK_SALT", "").strip())


def hash_user(raw: object, salt: str | None = None) -> str:
    """A stable pseudonym for a voter (HMAC-SHA256 with ``FEEDBACK_SALT``), 16 hex chars."""
    key = (salt if salt is not None else os.environ.get("FEEDBACK_SALT", "")) or "review-sentiment"
    return hmac.new(key.encode(), str(raw).encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Feedback:
    """One vote: ``label`` is what the voter says is right; ``predicted`` what the model said;
    ``user`` the voter's pseudonym."""

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
    if len(item.text) > MAX_VOTE_CHARS:
        raise FeedbackError(f"a vote's text is at most {MAX_VOTE_CHARS:,} characters")
    if item.source not in SOURCES:
        raise FeedbackError(f"source must be one of {', '.join(SOURCES)}")
    if not item.message or len(item.message) > 200 or not item.user:
        raise FeedbackError("a vote needs a message key (at most 200 characters) and a voter")
    if len(item.model_version) > 200:
        raise FeedbackError("model_version is too long")


def allow(limiter: Limiter, voter: str, per_minute: int = DEFAULT_RATE_PER_MINUTE) -> None:
    """Count a vote of ``voter`` in a moving minute; RateLimited beyond ``per_minute``."""
    verdict = limiter.hit("feedback", voter, per_minute)
    if not verdict.allowed:
        raise RateLimited(
            f"at most {per_minute} votes a minute; try again in {verdict.retry_after} s",
            verdict.retry_after,
        )


def has_room(conn: Redis, share: float) -> bool:
    """Whether Redis uses less than ``share`` of its ``maxmemory`` (always, without a cap)."""
    try:
        info: Any = conn.info("memory")
    except ResponseError:  # INFO refused (a restricted user, a fake server): no cap known
        return True
    cap = int(info.get("maxmemory", 0) or 0)
    return cap <= 0 or int(info.get("used_memory", 0)) < share * cap


def record(conn: Redis, item: Feedback, budget: Budget | None = None) -> str:
    """Store a vote (replacing this voter's earlier vote on the same message); its entry id.

    BudgetExceeded when the voter keeps their maximum of other votes, or Redis is too full."""
    budget = budget or Budget()
    check(item)
    if not has_room(conn, budget.memory_share):
        raise BudgetExceeded("votes are not being stored right now (storage full); try later")
    digest = hashlib.sha256(f"{item.message}|{item.user}".encode()).hexdigest()[:32]
    fields = {k: str(v) for k, v in asdict(item).items()}
    fields["v"] = ENTRY_FORMAT
    args: list[Any] = [time.time(), budget.retention_s, budget.max_stored, STREAM_MAX, digest]
    for name, value in fields.items():
        args += [name, value]
    keys = [STREAM_KEY, VOTE_KEY.format(digest), VOTER_KEY.format(item.user)]
    try:
        entry = conn.eval(_RECORD, len(keys), *keys, *args)
    except Exception as exc:
        if "budget" in str(exc):
            raise BudgetExceeded(
                f"this voter already keeps {budget.max_stored} votes (the most allowed)"
            ) from exc
        raise
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _vote(d: Mapping[str, str]) -> Feedback:
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
    """Every vote that counts, oldest first."""
    legacy = {v.decode() for v in conn.hvals(LEGACY_LATEST_KEY)}  # type: ignore[union-attr]
    start = since
    while True:
        batch: Any = conn.xrange(STREAM_KEY, min=start, max="+", count=1000)
        if not batch:
            return
        for raw_id, raw in batch:
            entry = raw_id.decode()
            fields = _decode(raw)
            if fields.get("v") == ENTRY_FORMAT or entry in legacy:
                yield entry, _vote(fields)
        last = batch[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


def count_since(conn: Redis, since: float) -> int:
    """Votes that count and arrived after ``since`` (unix time)."""
    return sum(1 for _ in entries(conn, f"{int(since * 1000)}-0"))


def stats(items: list[Feedback]) -> dict[str, Any]:
    """Counts per model version and source, and how often voters agreed with the model."""
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
