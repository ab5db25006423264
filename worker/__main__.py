"""RQ worker: ``sentiment-worker`` / ``python -m worker``.

    sentiment-worker                         # listen to the interactive and bulk queues
    sentiment-worker --processes 2           # two worker processes, each loads the model once
    sentiment-worker --burst                 # drain the queues, then exit

With ``METRICS_PORT`` set, each process serves Prometheus metrics on its own port
(``METRICS_PORT + i`` for the i-th of ``--processes``; ``worker.metrics``).

Each process loads the model before its first job and runs ``worker.service.ReloadingWorker``
(a ``SimpleWorker`` with hot reload and a heartbeat thread).  SIGTERM lets the current job finish
(RQ's warm shutdown).  With ``--processes N`` a supervisor starts N such processes (fresh
interpreters, never forked after TensorFlow is loaded) and forwards signals.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog

from shared.cli import command_parser
from shared.config import ConfigError, Settings, settings_or_exit
from shared.log import configure_logging
from shared.queues import WORKER_QUEUES, RedisUnavailable, connect, get_queue
from shared.store import ModelStore, StoreError

log = structlog.get_logger(__name__)

#: Pause before restarting a dead worker process: doubles while it keeps dying within a minute.
RESTART_PAUSE_S = (1.0, 30.0)
#: A worker's exit status when it cannot start (settings, Redis, model store).
EXIT_START_FAILED = 2


def run_worker(settings: Settings, queues: Sequence[str], burst: bool, name: str | None) -> int:
    """Load the model, then work; returns the exit code."""
    from shared.serializer import JSONSerializer
    from worker import jobs
    from worker.model import language
    from worker.model.predictor import configure_tensorflow
    from worker.reload import ModelHolder
    from worker.service import ReloadingWorker

    configure_tensorflow(settings.tf_threads)
    cache = ModelStore(settings.model_dir, settings.model_name)
    try:
        # Redis first: an unreachable one is reported in seconds, not after loading the model.
        conn = connect(settings.redis_url)
        remote = None
        if settings.model_store_url:  # MODEL_DIR is then this worker's local cache
            from shared.remote import RemoteStore, RemoteSync

            store = RemoteStore(settings.model_store_url, settings.model_name)
            if not store.verify_key:
                log.warning(
                    "model_signatures_unchecked",
                    action="set MODEL_VERIFY_KEY: without it anyone who can write to the "
                    "store can make this worker load a model",
                )
            remote = RemoteSync(store, cache)
        jobs.SERVING = ModelHolder(cache, remote)
        jobs.SERVING.load()
        language.load()
        jobs.SERVING.watch()
        # The model's thousands of objects live as long as the process: frozen, the cyclic
        # collector stops rescanning them at every collection a job's answers trigger.
        gc.freeze()
    except (StoreError, RedisUnavailable) as exc:
        log.error("worker_start_failed", reason=str(exc))
        print(f"sentiment-worker: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    worker = ReloadingWorker(
        [get_queue(q, conn) for q in queues], connection=conn, serializer=JSONSerializer, name=name
    )
    if settings.metrics_port:
        from shared.metrics import serve

        try:
            serve(settings.metrics_port, settings.metrics_addr)
        except ConfigError as exc:
            log.error("worker_start_failed", reason=str(exc))
            print(f"sentiment-worker: {exc}", file=sys.stderr)
            return EXIT_START_FAILED
    structlog.contextvars.bind_contextvars(worker=worker.name)
    worker.announce()
    log.info(
        "worker_started",
        worker=worker.name,
        queues=list(queues),
        burst=burst,
        model_version=jobs.SERVING.get().model_version,
    )
    worker.work(burst=burst, logging_level=settings.log_level, with_scheduler=False)
    return 0


def supervise(argv: Sequence[str], processes: int) -> int:
    """Run ``processes`` workers as fresh interpreters (never forked after TensorFlow is loaded).

    A worker that cannot start (exit 2: settings, Redis, model) stops them all with status 2;
    a worker that dies otherwise is started again (after a pause that grows while it keeps
    dying young);
    SIGTERM/SIGINT are forwarded, and then every worker is waited for.
    """

    base_port = Settings.from_env().metrics_port

    def spawn(index: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        if base_port:  # one scrape port per process: METRICS_PORT + index
            env["METRICS_PORT"] = str(base_port + index)
        return subprocess.Popen([sys.executable, "-m", "worker", *argv], env=env)

    children = [spawn(i) for i in range(processes)]
    started = [time.monotonic()] * processes
    pauses = [RESTART_PAUSE_S[0]] * processes
    stopping: list[int] = []

    def forward(signum: int, _: Any) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        for i, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            if code == EXIT_START_FAILED:  # bad settings, no Redis, no model: restarting won't help
                log.error("worker_process_failed_to_start", pid=child.pid, exit_code=code)
                forward(signal.SIGTERM, None)
                break
            lived = time.monotonic() - started[i]
            pauses[i] = RESTART_PAUSE_S[0] if lived > 60 else min(2 * pauses[i], RESTART_PAUSE_S[1])
            log.error("worker_process_died", pid=child.pid, exit_code=code, restart_in_s=pauses[i])
            time.sleep(pauses[i])
            if not stopping:
                children[i], started[i] = spawn(i), time.monotonic()
        time.sleep(0.2)
    for child in children:
        child.wait()
    return max((c.returncode or 0) for c in children)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = command_parser("sentiment-worker", __doc__)
    p.add_argument(
        "--queues",
        nargs="+",
        default=list(WORKER_QUEUES),
        help=f"queues in priority order (default: {' '.join(WORKER_QUEUES)})",
    )
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--processes", type=int, default=1, help="worker processes to run")
    p.add_argument("--name", help="worker name (default: RQ's)")
    p.add_argument("--log-level", help="overrides LOG_LEVEL")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    settings = settings_or_exit("sentiment-worker")
    if args.log_level:
        settings = dataclasses.replace(settings, log_level=args.log_level.upper())
    configure_logging(settings.log_level, settings.log_format)
    if args.processes > 1:
        child_argv = [a for a in raw if not a.startswith("--processes")]
        if "--processes" in raw:
            i = raw.index("--processes")
            child_argv = raw[:i] + raw[i + 2 :]
        return supervise(child_argv, args.processes)
    return run_worker(settings, args.queues, args.burst, args.name)


if __name__ == "__main__":
    sys.exit(main())
