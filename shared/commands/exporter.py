"""``sentiment-exporter``: Redis-wide Prometheus gauges, exported once for the whole system.

    sentiment-exporter --port 9120          # http://127.0.0.1:9120/metrics

Queue depths, registry sizes (started, finished, failed, deferred, scheduled), registered
workers and jobs taken but not started, read from Redis at each scrape.  Per-process figures
(jobs, latency, versions) come from each worker's own endpoint (``METRICS_PORT``).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

import structlog
from prometheus_client import CollectorRegistry

from shared.cli import command_parser
from shared.config import ConfigError, settings_or_exit
from shared.log import configure_logging
from shared.metrics import QueueCollector, serve
from shared.queues import WORKER_QUEUES, RedisUnavailable, connect, redact_url

log = structlog.get_logger(__name__)

DEFAULT_PORT = 9120


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("sentiment-exporter", __doc__)
    p.add_argument(
        "--port", type=int, help=f"scrape port (default: METRICS_PORT or {DEFAULT_PORT})"
    )
    p.add_argument("--host", help="interface (default: METRICS_ADDR, 127.0.0.1)")
    args = p.parse_args(argv)
    settings = settings_or_exit("sentiment-exporter")
    configure_logging(settings.log_level, settings.log_format)
    try:
        conn = connect(settings.redis_url)
    except RedisUnavailable as exc:
        print(f"sentiment-exporter: {exc}", file=sys.stderr)
        return 2
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn, WORKER_QUEUES))
    port = args.port if args.port is not None else settings.metrics_port or DEFAULT_PORT
    try:
        bound = serve(port, args.host or settings.metrics_addr, registry)
    except ConfigError as exc:
        print(f"sentiment-exporter: {exc}", file=sys.stderr)
        return 2
    log.info("exporter_started", port=bound, redis_url=redact_url(settings.redis_url))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    log.info("exporter_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
