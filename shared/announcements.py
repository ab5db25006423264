"""What serves and what the trainer decided, announced in Redis for producers, the bot's
``/model`` and operators.

* Workers announce the version they serve (``sentiment:served-model``, the latest announcement
  wins; ``sentiment:served-by``, per worker).  Producers key their jobs by it
  (``served_version``), so an answer is reused only while the version that made it serves.
* The trainer's latest decision (``sentiment:model-decision``): the version concerned, whether
  it was published, when, the numbers behind it (JSON) and a one-line summary such as
  ``v0004 since 12:03 UTC, +0.4 pt on feedback``.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

#: Hash where workers announce the model version they serve (read by the bot's /model).
SERVED_MODEL_KEY = "sentiment:served-model"
SERVED_BY_KEY = "sentiment:served-by"
ANNOUNCEMENT_TTL_S = 7 * 24 * 3600


def announce_model(conn: Redis, info: dict[str, Any]) -> None:
    """Record the version a worker serves now (the latest announcement wins; it expires when no
    worker has announced anything for ``ANNOUNCEMENT_TTL_S``)."""
    with conn.pipeline() as pipe:
        pipe.hset(SERVED_MODEL_KEY, mapping={k: str(v) for k, v in info.items() if v is not None})
        pipe.expire(SERVED_MODEL_KEY, ANNOUNCEMENT_TTL_S)
        if info.get("worker"):  # which worker serves what (sentiment-models list)
            pipe.hset(SERVED_BY_KEY, str(info["worker"]), str(info.get("model_version")))
            pipe.expire(SERVED_BY_KEY, ANNOUNCEMENT_TTL_S)
        pipe.execute()


def served_by(conn: Redis) -> dict[str, str]:
    """``{worker name: model version}`` for the workers RQ knows as alive."""
    from rq import Worker

    alive = {w.name for w in Worker.all(connection=conn)}
    raw: Any = conn.hgetall(SERVED_BY_KEY)
    return {k.decode(): v.decode() for k, v in raw.items() if k.decode() in alive}


def served_version(conn: Redis) -> str:
    """The model version the workers last announced (``""`` before any worker started)."""
    raw: Any = conn.hget(SERVED_MODEL_KEY, "model_version")
    return raw.decode() if raw else ""


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
