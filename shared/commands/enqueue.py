"""``sentiment-enqueue FILE... [-o results.jsonl]``: the bulk producer.

Reads text / CSV / JSONL files or an aclImdb folder/tarball, chunks the reviews into jobs with
deterministic ids (re-running enqueues nothing twice and picks up finished results), enqueues
them in Redis pipelines, waits for the workers and writes exactly one output line per input
line, in input order: the result, or the error for that line.

    sentiment-enqueue samples/reviews.txt -o results.jsonl # enqueue, wait, write
    sentiment-enqueue samples/reviews.csv --no-wait        # prints a batch id
    sentiment-enqueue --collect BATCH -o results.csv       # write the output later
    sentiment-enqueue reviews.csv --report summary.html    # and an HTML picture of the batch

With ``PUSHGATEWAY_URL`` set, the producer pushes its counters (``shared.metrics``) there every
few seconds and when it ends, grouped by ``run`` (host and process id).

Exit status: 0 when every line has its answer (a refused input line, an empty one say, is an
answer: its row says why); 1 when lines got no answer (timed out, failed or expired: their rows
say why; the same command retries them); 2 on bad input or an unreachable Redis; 3 when Redis is
out of memory; 130 when interrupted.

Ctrl-C leaves a consistent state: whatever was enqueued keeps running, and the same command
resumes without duplicating work.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from redis.exceptions import RedisError

from shared.batches import (
    DEFAULT_CHUNK_SIZE,
    EXIT_LINES_FAILED,
    Options,
    failed_lines_message,
    file_source,
    load,
    results,
    submit,
)
from shared.cli import add_sentence_options, command_parser
from shared.config import Settings, settings_or_exit
from shared.datasets import DataError
from shared.log import configure_logging
from shared.metrics import LAST_SUCCESS, PRODUCER, Pusher
from shared.output import OutputFile
from shared.queues import QUEUE_BULK, RedisUnavailable, connect, redis_out_of_memory
from shared.report import BatchReport, check_writable, write_report
from shared.schema import DEFAULT_TOP_WORDS, MAX_TOP_WORDS


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The output file is created first: an unwritable path fails before any work is queued.
    if args.report:
        check_writable(args.report)
    out = OutputFile(args.output, args.sentences) if args.output else None
    try:
        conn = connect(settings.redis_url)
        if args.collect:
            batch_id = load(conn, args.collect).batch_id
        else:
            options = Options.from_settings(
                settings,
                chunk_size=args.chunk_size,
                top_words=args.top_words,
                sentences=args.sentences,
                queue=args.queue,
            )
            batch_id = submit(conn, file_source(args.files, args.split), options).batch_id
            if not args.wait:
                if out is not None:
                    out.abort()
                print(batch_id)
                return 0
        rows = 0
        counts = {"positive": 0, "negative": 0, "error": 0}
        tally: Counter[str] = Counter()
        report = BatchReport(f"Batch {batch_id}") if args.report else None
        for row in results(conn, batch_id, args.timeout, tally=tally, texts=bool(report)):
            rows += 1
            if report is not None:
                report.add(row, row.pop("_text", None))
            if out is not None:
                out.write(row)
            else:
                key = "error" if row.get("error") else str(row.get("label"))
                counts[key] = counts.get(key, 0) + 1
    except BaseException:
        if out is not None:
            out.abort()
        raise
    if out is not None:
        counts = out.commit()
    if report is not None:
        write_report(report, args.report)
    print(
        f"{rows} lines: {counts['positive']} positive, {counts['negative']} negative, "
        f"{counts['error']} errors"
        + (f"; wrote {args.output}" if args.output else "")
        + (f"; report {args.report}" if args.report else "")
    )
    if message := failed_lines_message("sentiment-enqueue", tally):
        print(message, file=sys.stderr)
        return EXIT_LINES_FAILED
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = command_parser("sentiment-enqueue", __doc__, epilog=True)
    p.add_argument("files", nargs="*", type=Path, help=".txt, .csv, .jsonl, aclImdb dir or .tar.gz")
    p.add_argument("-o", "--output", type=Path, help="results file: .jsonl or .csv")
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the results (default); --no-wait prints the batch id",
    )
    p.add_argument("--collect", metavar="BATCH", help="write the output of an enqueued batch")
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
    p.add_argument(
        "--queue", default=QUEUE_BULK, help="Redis queue for the jobs (default: %(default)s)"
    )
    p.add_argument("--split", default="test", help="aclImdb split (default: test)")
    p.add_argument("--timeout", type=float, help="give up waiting after S seconds")
    args = p.parse_args(argv)
    if not args.files and not args.collect:
        p.error("give input files, or --collect BATCH")
    if args.report:
        args.sentences = True
    if not 1 <= args.chunk_size <= 1024:
        p.error("--chunk-size must be in 1..1024")
    if not 0 <= args.top_words <= MAX_TOP_WORDS:
        p.error(f"--top-words must be in 0..{MAX_TOP_WORDS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_or_exit("sentiment-enqueue")
    configure_logging(settings.log_level, settings.log_format)
    pusher = None
    if settings.pushgateway_url:
        run_id = f"{socket.gethostname()}-{os.getpid()}"
        pusher = Pusher(settings.pushgateway_url, PRODUCER, "sentiment-producer", {"run": run_id})
        pusher.start()
    try:
        code = run(args, settings)
        if code == 0 and args.wait:
            LAST_SUCCESS.set_to_current_time()
        return code
    except (DataError, RedisUnavailable) as exc:
        print(f"sentiment-enqueue: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        if not redis_out_of_memory(exc):
            raise
        print(
            "sentiment-enqueue: Redis is out of memory (maxmemory reached) and refuses new work; "
            "nothing was lost: free memory or raise maxmemory, then run the same command again",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print(
            "sentiment-enqueue: interrupted; run the same command again to resume", file=sys.stderr
        )
        return 130
    finally:
        if pusher is not None:
            pusher.close()


if __name__ == "__main__":
    sys.exit(main())
