"""Prometheus metrics: how every process exposes them, and the ones the light package counts.

One scrape port per process (``METRICS_PORT``; 0 turns it off), never prometheus_client's
multiprocess mode: every worker is its own process with its own model, so one endpoint per
process gives each worker its own ``instance`` (which version it serves, its heartbeat age) with
no shared directory of mmap files to clean after a process dies.  ``sentiment-worker
--processes N`` gives process *i* the port ``METRICS_PORT + i``; in compose every worker container
listens on the same port and Prometheus finds the replicas through DNS as they scale.

Producers are batch jobs that may end before any scrape: they push to a Pushgateway
(``PUSHGATEWAY_URL``) every ``PUSH_EVERY_S`` and when they finish.

Queue depths and registry sizes are Redis-wide facts: ``sentiment-exporter`` exports them once
(``QueueCollector``), never each worker.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import push_to_gateway
from prometheus_client.registry import Collector

from shared.config import ConfigError

log = structlog.get_logger(__name__)

#: A producer pushes its counters this often while it runs (and once more at the end).
PUSH_EVERY_S = 10.0

# -- the producer's counters (shared.queues / shared.batches count into them) ----------------
PRODUCER = CollectorRegistry()
ENQUEUED_JOBS = Counter(
    "sentiment_producer_jobs_enqueued",
    "Jobs the producer created on a queue (first time, or again after a failure)",
    ["queue"],
    registry=PRODUCER,
)
ENQUEUED_REVIEWS = Counter(
    "sentiment_producer_reviews_enqueued",
    "Reviews in the jobs the producer created",
    ["queue"],
    registry=PRODUCER,
)
REUSED_JOBS = Counter(
    "sentiment_producer_jobs_reused",
    "Jobs already queued, running or finished that a rerun did not enqueue again",
    registry=PRODUCER,
)
RETRIED_JOBS = Counter(
    "sentiment_producer_jobs_retried",
    "Failed, stopped or cancelled jobs the producer enqueued again",
    registry=PRODUCER,
)
COLLECTED_ROWS = Counter(
    "sentiment_producer_rows_collected",
    "Output lines written, by outcome (positive, negative, error)",
    ["outcome"],
    registry=PRODUCER,
)
RECOVERED_JOBS = Counter(
    "sentiment_producer_jobs_recovered",
    "Jobs of dead workers the producer returned to their queue while it waited",
    registry=PRODUCER,
)


def count_collected(rows: list[dict[str, Any]]) -> None:
    """Count output rows by outcome (positive, negative, error)."""
    for row in rows:
        COLLECTED_ROWS.labels("error" if row.get("error") else str(row.get("label"))).inc()


LAST_SUCCESS = Gauge(
    "sentiment_producer_last_success_unixtime",
    "When a producer run last finished writing its output",
    registry=PRODUCER,
)


def serve(port: int, addr: str = "127.0.0.1", registry: Any = None) -> int:
    """Expose ``registry`` (default: the process's global one) on ``addr:port``; returns the
    port (0 picks a free one).  ConfigError when the port cannot be bound (in use, say)."""
    kwargs: dict[str, Any] = {"addr": addr}
    if registry is not None:
        kwargs["registry"] = registry
    try:
        server, _thread = start_http_server(port, **kwargs)
    except OSError as exc:
        raise ConfigError(f"metrics port {addr}:{port}: {exc.strerror or exc}") from exc
    bound = int(server.server_address[1])
    log.info("metrics_serving", addr=addr, port=bound)
    return bound


class Pusher:
    """Pushes a registry to a Pushgateway every ``every`` seconds in a thread, and at close.

    The grouping key names the run (host and pid) so concurrent producers never overwrite each
    other's counters.  A Pushgateway that is away is logged, never fatal: metrics are not worth
    failing a batch for.
    """

    def __init__(
        self,
        url: str,
        registry: CollectorRegistry,
        job: str,
        grouping: dict[str, str] | None = None,
        every: float = PUSH_EVERY_S,
    ) -> None:
        self.url = url
        self.registry = registry
        self.job = job
        self.grouping = dict(grouping or {"instance": socket.gethostname()})
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-push", daemon=True)

    def start(self) -> Pusher:
        self._thread.start()
        return self

    def push(self) -> bool:
        try:
            push_to_gateway(
                self.url, job=self.job, registry=self.registry, grouping_key=self.grouping
            )
        except OSError as exc:
            log.warning("metrics_push_failed", url=self.url, reason=str(exc))
            return False
        return True

    def close(self) -> bool:
        """Stop the thread and push the final values; returns whether that push succeeded."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.push()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.push()


class QueueCollector(Collector):
    """Redis-wide gauges read at scrape time: queue depths, registry sizes, registered workers.

    Which version each worker serves comes from the workers themselves
    (``sentiment_worker_model_info``), so it is right even while they disagree during a reload.
    """

    def __init__(self, conn: Any, queues: tuple[str, ...]) -> None:
        self.conn = conn
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from rq import Queue, Worker

        from shared import reliable
        from shared.serializer import JSONSerializer

        up = GaugeMetricFamily("sentiment_redis_up", "Whether the exporter could read Redis")
        try:
            depth = GaugeMetricFamily(
                "sentiment_queue_depth", "Jobs waiting in a queue", labels=["queue"]
            )
            registry = GaugeMetricFamily(
                "sentiment_queue_registry_jobs",
                "Jobs in a queue's registries (started, finished, failed, deferred, scheduled)",
                labels=["queue", "registry"],
            )
            for name in self.queues:
                queue = Queue(name, connection=self.conn, serializer=JSONSerializer)
                # Read-only: RQ's ``count`` properties clean registries (writes) first.
                depth.add_metric([name], self.conn.llen(queue.key))
                for kind, reg in (
                    ("started", queue.started_job_registry),
                    ("finished", queue.finished_job_registry),
                    ("failed", queue.failed_job_registry),
                    ("deferred", queue.deferred_job_registry),
                    ("scheduled", queue.scheduled_job_registry),
                ):
                    registry.add_metric([name, kind], self.conn.zcard(reg.key))
            workers = GaugeMetricFamily("sentiment_workers", "Workers registered with RQ")
            workers.add_metric([], len(Worker.all(connection=self.conn)))
            taken = GaugeMetricFamily(
                "sentiment_jobs_taken",
                "Jobs taken by a worker and not yet started (its processing list)",
            )
            holders = [m.decode() for m in self.conn.smembers(reliable.WORKERS_KEY)]
            with self.conn.pipeline(transaction=False) as pipe:
                for name in holders:
                    pipe.llen(reliable.PROCESSING_KEY.format(name))
                taken.add_metric([], sum(pipe.execute()) if holders else 0)
        except Exception as exc:  # a scrape must answer: say Redis is down instead
            log.warning("exporter_redis_failed", reason=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (up, depth, registry, workers, taken)
