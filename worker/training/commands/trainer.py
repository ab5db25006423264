"""``sentiment-trainer``: the long-running training job that learns from user feedback.

    sentiment-trainer                          # wait for TRAINER_MIN_FEEDBACK new votes (or the
                                               # TRAINER_INTERVAL_S schedule), then train, gate,
                                               # publish or refuse; repeat
    sentiment-trainer --once                   # one cycle now (by hand), then exit
    sentiment-trainer --once --if-due          # one cycle if it is due, then exit (a CronJob)
    sentiment-trainer --once --data corpus.csv --test-data test.csv --epochs 2

Takes sentiment-train's recipe options.  One trainer at a time: a second one waits for the lock
(``--wait-lock S``) or exits with status 4.  SIGTERM/SIGINT between cycles stop it; a cycle that
is killed publishes nothing (its work lives in a scratch store) and its lock lapses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

import structlog
from redis import Redis
from redis.exceptions import RedisError

from shared.cli import command_parser
from shared.config import ConfigError, Settings, settings_or_exit
from shared.datasets import DataError
from shared.log import configure_logging
from shared.queues import RedisUnavailable, connect, redact_url
from shared.store import StoreError
from worker.training.config import TrainConfig
from worker.training.lock import RedisLock
from worker.training.options import (
    add_store_arguments,
    add_training_arguments,
    check_training_arguments,
    config_from,
)
from worker.training.trainer import TrainerSettings, due, mark_run, run_cycle

log = structlog.get_logger(__name__)

EXIT_LOCKED = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = command_parser("sentiment-trainer", __doc__, epilog=True)
    p.add_argument("--once", action="store_true", help="run one cycle now, then exit")
    p.add_argument(
        "--if-due", action="store_true", help="with --once: only when a cycle is due, else exit 0"
    )
    p.add_argument(
        "--wait-lock", type=float, default=0.0, help="seconds to wait for another trainer"
    )
    add_training_arguments(p)
    add_store_arguments(p)
    args = p.parse_args(argv)
    check_training_arguments(p, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    settings = settings_or_exit("sentiment-trainer")
    try:
        tsettings = TrainerSettings.from_env(os.environ)
    except ConfigError as exc:
        print(f"sentiment-trainer: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    settings = dataclasses.replace(
        settings,
        model_dir=args.model_dir or settings.model_dir,
        model_name=args.model_name or settings.model_name,
    )
    base = config_from(args)
    try:
        conn = connect(settings.redis_url)
    except RedisUnavailable as exc:
        print(f"sentiment-trainer: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("trainer_started", redis_url=redact_url(settings.redis_url), once=args.once)
    while not stop.is_set():
        try:
            if args.once and not args.if_due:
                run_now, why = True, "--once"
            else:
                run_now, why = due(conn, tsettings, time.time())
            if args.once and not run_now:
                print("sentiment-trainer: no cycle due (not enough new votes, not scheduled)")
                return 0
            if run_now:
                code = _cycle(conn, settings, tsettings, base, args.wait_lock, why)
                if args.once:
                    return code
        except RedisError as exc:  # Redis away: try again at the next check
            log.error("trainer_redis_failed", reason=str(exc))
            if args.once:
                print(f"sentiment-trainer: Redis: {exc}", file=sys.stderr)
                return 2
        stop.wait(tsettings.check_every_s)
    log.info("trainer_stopped")
    return 0


def _cycle(
    conn: Redis,
    settings: Settings,
    tsettings: TrainerSettings,
    base: TrainConfig,
    wait_lock: float,
    why: str,
) -> int:
    lock = RedisLock(conn, tsettings.lock_ttl_s)
    if not lock.acquire(wait_lock):
        log.info("trainer_lock_held", action="skipped: another trainer is running")
        print("sentiment-trainer: another trainer holds the lock; nothing done", file=sys.stderr)
        return EXIT_LOCKED
    started = time.time()
    try:
        log.info("trainer_cycle_due", reason=why)
        decision = run_cycle(conn, settings, tsettings, base, lock)
        mark_run(conn, started)
    except (DataError, StoreError, ValueError, OSError) as exc:
        # A failed cycle counts as a run: the next one waits for new votes or the schedule,
        # instead of retraining the same votes at every check (or crash-looping).
        log.error("trainer_cycle_failed", reason=str(exc))
        print(f"sentiment-trainer: {exc}", file=sys.stderr)
        try:
            mark_run(conn, started, failed=str(exc))
        except RedisError as redis_exc:
            log.warning("trainer_state_not_saved", reason=str(redis_exc))
        return 2
    finally:
        lock.release()
    print(decision.summary)
    return 0 if decision.published else 3


if __name__ == "__main__":
    sys.exit(main())
