"""``sentiment-enqueue FILE... [-o results.jsonl]``: the bulk producer.

Reads text / CSV / JSONL files or an aclImdb folder/tarball, chunks the reviews into jobs with
deterministic ids (re-running enqueues nothing twice and picks up finished results), enqueues
them in Redis pipelines, waits for the workers and writes exactly one output line per input
line, in input order: the result, or the error for that line.

    sentiment-enqueue reviews.txt -o results.jsonl         # enqueue, wait, write
    sentiment-enqueue big.csv --no-wait                    # prints a batch id
    sentiment-enqueue --collect BATCH -o results.csv       # write the output later

Ctrl-C leaves a consistent state: whatever was enqueued keeps running, and the same command
resumes without duplicating work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.batches import (
    DEFAULT_CHUNK_SIZE,
    gather,
    label_counts,
    load_batch,
    read_inputs,
    submit,
    write_output,
)
from shared.config import Settings, settings_or_exit
from shared.datasets import DataError
from shared.log import configure_logging
from shared.queues import QUEUE_BULK, RedisUnavailable, connect
from shared.schema import DEFAULT_TOP_WORDS


def run(args: argparse.Namespace, settings: Settings) -> int:
    conn = connect(settings.redis_url)
    if args.collect:
        batch = load_batch(conn, args.collect)
    else:
        reviews = read_inputs(args.files, args.split)
        if not reviews:
            raise DataError(", ".join(map(str, args.files)), "no reviews found")
        batch = submit(
            conn, reviews, args.chunk_size, args.top_words, args.queue, settings.job_timeout
        )
        if not args.wait:
            print(batch.batch_id)
            return 0
    rows = gather(conn, batch, args.timeout)
    if args.output:
        write_output(rows, args.output)
    counts = label_counts(rows)
    print(
        f"{len(rows)} lines: {counts['positive']} positive, {counts['negative']} negative, "
        f"{counts['error']} errors" + (f"; wrote {args.output}" if args.output else "")
    )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sentiment-enqueue",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="*", type=Path, help=".txt, .csv, .jsonl, aclImdb dir or .tar.gz")
    p.add_argument("-o", "--output", type=Path, help="results file: .jsonl or .csv")
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the results (default); --no-wait prints the batch id",
    )
    p.add_argument("--collect", metavar="BATCH", help="write the output of an enqueued batch")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="reviews per job")
    p.add_argument("--top-words", type=int, default=DEFAULT_TOP_WORDS)
    p.add_argument("--queue", default=QUEUE_BULK)
    p.add_argument("--split", default="test", help="aclImdb split (default: test)")
    p.add_argument("--timeout", type=float, help="give up waiting after S seconds")
    args = p.parse_args(argv)
    if not args.files and not args.collect:
        p.error("give input files, or --collect BATCH")
    if not 1 <= args.chunk_size <= 1024:
        p.error("--chunk-size must be in 1..1024")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_or_exit("sentiment-enqueue")
    configure_logging(settings.log_level, settings.log_format)
    try:
        return run(args, settings)
    except (DataError, RedisUnavailable) as exc:
        print(f"sentiment-enqueue: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "sentiment-enqueue: interrupted; run the same command again to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
