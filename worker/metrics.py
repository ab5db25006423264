"""A worker process's Prometheus metrics (the process's default registry, ``METRICS_PORT``).

Jobs and reviews processed, errors by kind, job / per-review / queue-wait latency, the model
version served, reloads and refusals, and the age of the last heartbeat.  Why one port per
process rather than prometheus_client's multiprocess mode: ``shared.metrics``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

JOBS = Counter(
    "sentiment_worker_jobs",
    "Jobs this worker ran to the end, by queue and outcome (finished, failed, refused)",
    ["queue", "outcome"],
)
REVIEWS = Counter(
    "sentiment_worker_reviews",
    "Reviews answered, by outcome (positive, negative, error)",
    ["outcome"],
)
ERRORS = Counter(
    "sentiment_worker_errors",
    "Errors by kind: per-review refusals (empty, too_long, nul_bytes, not_text) and failed "
    "jobs by exception class",
    ["kind"],
)
JOB_SECONDS = Histogram(
    "sentiment_worker_job_seconds",
    "Time to run one job (prediction and explanations)",
    buckets=_LATENCY_BUCKETS,
)
REVIEW_SECONDS = Histogram(
    "sentiment_worker_review_seconds",
    "Worker time per review (a job's time over its reviews)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
WAIT_SECONDS = Histogram(
    "sentiment_worker_queue_wait_seconds",
    "Time a job waited in its queue before this worker started it",
    ["queue"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_INFO = Gauge(
    "sentiment_worker_model_info",
    "1 for the model version this worker serves now",
    ["model_version"],
)
RELOADS = Counter("sentiment_worker_model_reloads", "New model versions swapped in")
REFUSALS = Counter(
    "sentiment_worker_model_refusals", "Published versions refused (failed to load or verify)"
)
LAST_HEARTBEAT = Gauge(
    "sentiment_worker_last_heartbeat_unixtime", "When this worker last wrote its heartbeat"
)
HEARTBEAT_AGE = Gauge(
    "sentiment_worker_heartbeat_age_seconds", "Seconds since this worker's last heartbeat"
)

_last_beat = [time.time()]
_served: list[str] = []
HEARTBEAT_AGE.set_function(lambda: time.time() - _last_beat[0])


def serving(model_version: str) -> None:
    """Record the version served now (the previous one's series drops to 0)."""
    for previous in _served:
        if previous != model_version:
            MODEL_INFO.labels(previous).set(0)
    MODEL_INFO.labels(model_version).set(1)
    _served[:] = [model_version]


def heartbeat() -> None:
    _last_beat[0] = time.time()
    LAST_HEARTBEAT.set(_last_beat[0])


def error_kind(message: str) -> str:
    """A bounded label for a per-review error message (``shared.schema.review_error``)."""
    text = message.lower()
    for needle, kind in (
        ("empty", "empty"),
        ("longer than", "too_long"),
        ("nul", "nul_bytes"),
        ("must be a string", "not_text"),
    ):
        if needle in text:
            return kind
    return "other"


def job_done(results: list[dict[str, Any]], seconds: float) -> None:
    """Count one job's reviews and latency (called by the job function)."""
    JOB_SECONDS.observe(seconds)
    per_review = seconds / max(1, len(results))
    for item in results:
        REVIEW_SECONDS.observe(per_review)
        if item.get("error"):
            REVIEWS.labels("error").inc()
            ERRORS.labels(error_kind(str(item["error"]))).inc()
        else:
            REVIEWS.labels(str(item["label"])).inc()
