"""The API's Prometheus metrics (``GET /metrics``), in a registry of their own.

One process serves the API (uvicorn, one event loop), so plain in-process metrics are exact.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

REGISTRY = CollectorRegistry()
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "sentiment_api_requests",
    "HTTP requests answered, by endpoint and status",
    ["method", "endpoint", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "sentiment_api_request_seconds",
    "Time to answer a request, by endpoint",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
REVIEWS = Counter(
    "sentiment_api_reviews",
    "Reviews answered by /v1/classify, by outcome (positive, negative, error)",
    ["outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "sentiment_api_rate_limited",
    "Requests refused by the per-token rate limit, by token name",
    ["token"],
    registry=REGISTRY,
)
TIMEOUTS = Counter(
    "sentiment_api_timeouts",
    "Requests no worker answered in time (the job was cancelled)",
    registry=REGISTRY,
)
BATCH_ROWS = Counter(
    "sentiment_api_batch_rows",
    "Input lines of uploaded batches",
    registry=REGISTRY,
)


#: The methods a label may name; any other (a client may send anything) is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def observe_request(method: str, endpoint: str, status: int, seconds: float) -> None:
    """Count one answered request; every label comes from a closed set (methods above, route
    templates or "unmatched", HTTP status codes)."""
    REQUESTS.labels(method_label(method), endpoint, str(status)).inc()
    LATENCY.labels(endpoint).observe(seconds)


def render() -> bytes:
    return generate_latest(REGISTRY)
