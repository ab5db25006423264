"""Bulk producer: ``sentiment-enqueue FILE... [-o results.jsonl]``.

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
import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from redis import Redis

from shared.config import Settings, settings_or_exit
from shared.datasets import DataError, Review, read_reviews
from shared.log import configure_logging
from shared.queues import (
    QUEUE_BULK,
    RESULT_TTL_S,
    RedisUnavailable,
    collect,
    connect,
    enqueue_payloads,
    get_queue,
    job_id_for,
)
from shared.schema import DEFAULT_TOP_WORDS, make_payload, review_error

log = structlog.get_logger(__name__)

#: Reviews per job.  ~57 Redis commands per job make tiny jobs slow (1/job ~170 reviews/s);
#: bench/throughput.py, 2 workers on 2 cores: 16/job 1,052, 64/job 1,294, 256/job 1,526 reviews/s.
DEFAULT_CHUNK_SIZE = 256
BATCH_KEY = "sentiment:batch:{}"
OUTPUT_FIELDS = [
    "id",
    "line",
    "label",
    "negative",
    "positive",
    "top_words",
    "top_phrases",
    "model_version",
    "error",
]


@dataclass
class Batch:
    """The plan for one input: every input row, and which job answers it."""

    rows: list[dict[str, Any]]  # {"id", "line", "source", "error"?}
    jobs: list[tuple[str, list[int]]]  # job id -> row indices, in payload order
    payloads: list[dict[str, Any]]

    @property
    def batch_id(self) -> str:
        digest = hashlib.sha256()
        for job_id, rows in self.jobs:
            digest.update(f"{job_id}:{','.join(map(str, rows))};".encode())
        digest.update(json.dumps([r.get("error") for r in self.rows]).encode())
        return digest.hexdigest()[:24]


def plan(reviews: Sequence[Review], chunk_size: int, top_words: int) -> Batch:
    """Answer every input row: invalid ones now, valid ones by jobs of ``chunk_size`` reviews.

    Jobs group reviews of similar length (input order is restored when writing the output): a
    job's forward pass is padded to its longest review, so mixing a 20-word and a 600-word review
    in one job wastes most of the work (+30% throughput measured in bench/throughput.py).
    """
    rows: list[dict[str, Any]] = []
    valid: list[int] = []
    for review in reviews:
        row: dict[str, Any] = {"id": review.id, "line": review.line, "source": review.source}
        error = review.error or review_error(review.text)
        if error:
            row["error"] = error
        else:
            valid.append(len(rows))
        rows.append(row)
    valid.sort(key=lambda i: len(reviews[i].text))  # stable: ties keep input order
    jobs, payloads = [], []
    for start in range(0, len(valid), chunk_size):
        idx = valid[start : start + chunk_size]
        payload = make_payload([(reviews[i].id or str(i), reviews[i].text) for i in idx], top_words)
        jobs.append((job_id_for(payload), idx))
        payloads.append(payload)
    return Batch(rows, jobs, payloads)


def save_batch(conn: Redis, batch: Batch) -> str:
    record = {"rows": batch.rows, "jobs": batch.jobs}
    conn.set(BATCH_KEY.format(batch.batch_id), json.dumps(record), ex=RESULT_TTL_S)
    return batch.batch_id


def load_batch(conn: Redis, batch_id: str) -> Batch:
    raw = conn.get(BATCH_KEY.format(batch_id))
    if raw is None:
        raise DataError(batch_id, "unknown or expired batch id")
    record = json.loads(raw)
    return Batch(record["rows"], [(j, list(r)) for j, r in record["jobs"]], [])


def gather(
    conn: Redis, batch: Batch, timeout: float | None, progress: bool = True
) -> list[dict[str, Any]]:
    """Wait for the batch's jobs and return one output row per input row, in order."""
    from tqdm import tqdm

    out = [dict(row) for row in batch.rows]
    sizes = {job_id: len(idx) for job_id, idx in batch.jobs}
    bar = tqdm(total=sum(sizes.values()), desc="results", unit=" reviews", disable=not progress)
    outcomes = collect(
        conn,
        [j for j, _ in batch.jobs],
        timeout=timeout,
        on_done=lambda o: bar.update(sizes[o.job_id]),
    )
    bar.close()
    for job_id, idx in batch.jobs:
        outcome = outcomes[job_id]
        answers = outcome.result["results"] if outcome.result else [None] * len(idx)
        version = outcome.result["model_version"] if outcome.result else None
        for i, answer in zip(idx, answers, strict=True):
            if answer is None:
                out[i]["error"] = outcome.error
            else:
                out[i].update({k: v for k, v in answer.items() if k != "id"}, model_version=version)
    return out


def write_output(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """CSV or JSONL by extension; one line (CSV: one record) per input row."""
    tmp = path.with_name(path.name + ".part")
    if path.suffix.lower() == ".csv":
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, OUTPUT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                scores = row.get("scores") or {}
                writer.writerow(
                    {
                        **row,
                        "negative": scores.get("negative"),
                        "positive": scores.get("positive"),
                        "top_words": " ".join(w for w, _ in row.get("top_words") or []),
                        "top_phrases": " | ".join(p for p, _ in row.get("top_phrases") or []),
                    }
                )
    else:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                clean = {k: v for k, v in row.items() if k != "source"}
                clean.setdefault("error", None)
                fh.write(json.dumps(clean, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_inputs(files: Sequence[Path], split: str) -> list[Review]:
    from tqdm import tqdm

    reviews: list[Review] = []
    for file in files:
        reviews.extend(
            tqdm(
                read_reviews(file, split=split, errors="keep"),
                desc=f"read {file.name}",
                unit=" reviews",
                disable=not sys.stderr.isatty(),
            )
        )
    return reviews


def submit(
    conn: Redis,
    reviews: Sequence[Review],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    top_words: int = DEFAULT_TOP_WORDS,
    queue_name: str = QUEUE_BULK,
    job_timeout: int = 60,
) -> Batch:
    """Plan the jobs for ``reviews``, record the batch, enqueue (with a progress bar)."""
    from tqdm import tqdm

    batch = plan(reviews, chunk_size, top_words)
    batch_id = save_batch(conn, batch)
    with tqdm(total=len(batch.payloads), desc="enqueue", unit=" jobs") as bar:
        enqueue_payloads(
            get_queue(queue_name, conn),
            batch.payloads,
            timeout=job_timeout,
            progress=bar,
            ids=[job_id for job_id, _ in batch.jobs],
        )
    log.info(
        "batch_enqueued",
        batch_id=batch_id,
        reviews=len(batch.rows),
        jobs=len(batch.jobs),
        queue=queue_name,
    )
    return batch


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
    errors = sum(1 for r in rows if r.get("error"))
    if args.output:
        write_output(rows, args.output)
    labels = {
        label: sum(1 for r in rows if r.get("label") == label) for label in ("positive", "negative")
    }
    print(
        f"{len(rows)} lines: {labels['positive']} positive, {labels['negative']} negative, "
        f"{errors} errors" + (f"; wrote {args.output}" if args.output else "")
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
