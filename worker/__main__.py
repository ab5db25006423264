"""RQ worker: ``sentiment-worker`` / ``python -m worker``.

    sentiment-worker                         # listen to the interactive and bulk queues
    sentiment-worker --processes 2           # two worker processes, each loads the model once
    sentiment-worker --burst                 # drain the queues, then exit

A ``SimpleWorker`` (no fork per job: TensorFlow is not fork-safe, and loading per job costs
seconds) that loads the model before its first job, checks ``LATEST`` between jobs (one ``stat``)
and swaps to a new version only after it loaded and passed its checks.  SIGTERM lets the
current job finish (RQ's warm shutdown).  With ``--processes N`` a supervisor starts N such
processes (fresh interpreters, never forked after TensorFlow is loaded) and forwards signals.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from shared.config import Settings, settings_or_exit
from shared.log import configure_logging
from shared.queues import WORKER_QUEUES, RedisUnavailable, announce_model, connect, get_queue
from shared.store import ModelStore, StoreError

log = structlog.get_logger(__name__)

#: A SimpleWorker runs the job in its own thread, so nothing refreshes its heartbeat while a
#: job runs; ours does, from a background thread every HEARTBEAT_EVERY_S, with a short TTL.  A
#: SIGKILLed worker's job then expires from the started registry within HEARTBEAT_TTL_S and is
#: retried by another worker (instead of after the whole job timeout).
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = 15


def make_worker_class() -> Any:
    from rq import SimpleWorker

    from worker import jobs

    class ReloadingWorker(SimpleWorker):  # type: ignore[misc]
        """SimpleWorker that hot-reloads the model between jobs."""

        def execute_job(self, job: Any, queue: Any) -> Any:
            from rq.worker import WorkerStatus

            if jobs.serving().maybe_reload():
                self.announce()
            execution = self.prepare_execution(job)
            done = threading.Event()
            beat = threading.Thread(
                target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True
            )
            beat.start()
            try:
                self.perform_job(job, queue, execution)
            finally:
                done.set()
                beat.join()
            self.set_state(WorkerStatus.IDLE)

        def prepare_execution(self, job: Any) -> Any:
            """RQ's, plus the job's STARTED status in the same transaction.

            RQ registers the execution first and sets STARTED later, in perform_job; a worker
            killed in between leaves a registry entry whose job is still "queued", and the
            registry's cleanup then drops it without a retry: the job is lost.  Written together,
            an abandoned job is always retried.  The job also leaves the intermediate queue here,
            so only the started registry is responsible for it.
            """
            from rq import Queue
            from rq.executions import Execution
            from rq.job import JobStatus
            from rq.worker import WorkerStatus

            with self.connection.pipeline() as pipeline:
                execution = Execution.create(
                    job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name
                )
                self.executions[execution.id] = execution
                self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
                job.set_status(JobStatus.STARTED, pipeline=pipeline)
                queue = Queue(job.origin, connection=self.connection)
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
                pipeline.execute()
            return execution

        def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
            while not done.wait(HEARTBEAT_EVERY_S):
                try:
                    self.maintain_heartbeats(job, execution)
                except RedisError as exc:  # Redis away: the job itself will notice
                    log.warning("heartbeat_failed", job_id=job.id, reason=str(exc))

        def announce(self) -> None:
            """Tell Redis which version this worker serves (best effort)."""
            try:
                announce_model(
                    self.connection, {**jobs.serving().get().info(), "worker": self.name}
                )
            except RedisError as exc:
                log.warning("model_announce_failed", reason=str(exc))

        def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
            return HEARTBEAT_TTL_S

    return ReloadingWorker


def run_worker(settings: Settings, queues: Sequence[str], burst: bool, name: str | None) -> int:
    """Load the model, then work; returns the exit code."""
    from rq.serializers import JSONSerializer

    from worker import jobs
    from worker.predictor import configure_tensorflow

    configure_tensorflow(settings.tf_threads)
    jobs.SERVING = jobs.ModelHolder(ModelStore(settings.model_dir, settings.model_name))
    try:
        jobs.SERVING.load()
        jobs.SERVING.watch()
        conn = connect(settings.redis_url)
    except (StoreError, RedisUnavailable) as exc:
        log.error("worker_start_failed", reason=str(exc))
        print(f"sentiment-worker: {exc}", file=sys.stderr)
        return 2
    worker = make_worker_class()(
        [get_queue(q, conn) for q in queues], connection=conn, serializer=JSONSerializer, name=name
    )
    structlog.contextvars.bind_contextvars(worker=worker.name)
    worker.announce()
    log.info(
        "worker_started",
        worker=worker.name,
        queues=list(queues),
        burst=burst,
        model_version=jobs.SERVING.get().version,
    )
    worker.work(burst=burst, logging_level=settings.log_level, with_scheduler=False)
    return 0


def supervise(argv: Sequence[str], processes: int) -> int:
    """Start ``processes`` workers as fresh interpreters; forward SIGTERM/SIGINT; wait for all."""
    children = [subprocess.Popen([sys.executable, "-m", "worker", *argv]) for _ in range(processes)]

    def forward(signum: int, _: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(c.poll() is None for c in children):
        time.sleep(0.2)
    return max((c.returncode or 0) for c in children)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sentiment-worker", description=__doc__.split("\n\n")[0])
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
        settings = Settings(**{**settings.__dict__, "log_level": args.log_level.upper()})
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
