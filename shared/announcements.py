"""What the trainer decided last, announced in Redis for the bot's ``/model`` and operators.

One hash (``sentiment:model-decision``): the version concerned, whether it was published, when,
the numbers behind the decision (JSON) and a one-line summary such as
``v0004 since 12:03 UTC, +0.4 pt on feedback``.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

DECISION_KEY = "sentiment:model-decision"
DECISION_TTL_S = 30 * 24 * 3600


def announce_decision(conn: Redis, decision: dict[str, Any]) -> None:
    """Record the trainer's latest decision (it replaces the previous one)."""
    fields: dict[Any, Any] = {
        "version": str(decision.get("version") or ""),
        "published": "1" if decision.get("published") else "0",
        "at": str(decision.get("at", "")),
        "summary": str(decision.get("summary", "")),
        "numbers": json.dumps(decision.get("numbers", {}), sort_keys=True),
    }
    with conn.pipeline() as pipe:
        pipe.delete(DECISION_KEY)
        pipe.hset(DECISION_KEY, mapping=fields)
        pipe.expire(DECISION_KEY, DECISION_TTL_S)
        pipe.execute()


def last_decision(conn: Redis) -> dict[str, str]:
    """The latest decision, decoded ({} when none was announced)."""
    raw: Any = conn.hgetall(DECISION_KEY)
    return {k.decode(): v.decode() for k, v in raw.items()} if raw else {}
