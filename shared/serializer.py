"""The serializer of jobs and results on the queues: plain JSON, written and read by orjson.

RQ stores a job's call (function path and payload) and its result through the queue's
serializer.  The wire format stays JSON, so jobs and results written by RQ's own
``JSONSerializer`` (an older producer or worker during a rolling upgrade, ``rq-dashboard
--json``) read the same, and the other way round; tests mix the two on purpose.  orjson (a
well-kept C library) does it several times faster than the standard library: a result answered
per sentence is a few kilobytes a review, and encoding it in the worker and decoding it in the
producer was a quarter of a bulk run's time with sentences.

Decoding pauses Python's cyclic garbage collector (``shared.collector``): a result of 256
reviews answered per sentence is some 40,000 dicts and lists.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.collector import paused

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, float):  # a float subclass orjson does not take as it is
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JSONSerializer:
    """RQ's serializer protocol (``dumps`` to bytes, ``loads`` from bytes), in JSON."""

    @staticmethod
    def dumps(value: Any, *args: Any, **kwargs: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=_OPTIONS)

    @staticmethod
    def loads(data: bytes | str, *args: Any, **kwargs: Any) -> Any:
        return loads(data)


def loads(data: bytes | str) -> Any:
    """``orjson.loads`` with the cyclic garbage collector paused (``shared.collector``)."""
    with paused():
        return orjson.loads(data)
