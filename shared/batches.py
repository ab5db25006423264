"""Bulk batches: plan a file's reviews into jobs, record the batch, enqueue, gather, write.

A batch answers every input row: an invalid one with its error at once, the valid ones through
jobs of up to ``DEFAULT_CHUNK_SIZE`` reviews with deterministic ids (re-running enqueues nothing
twice and picks up finished results).  The output has exactly one line per input line, in input
order: the result, or the error for that line.  Used by ``sentiment-enqueue``, ``sentiment-run``
and the benchmarks.
"""

from __future__ import annotations

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

from shared.datasets import DataError, Review, read_reviews
from shared.queues import (
    JOB_TIMEOUT_S,
    QUEUE_BULK,
    RESULT_TTL_S,
    collect,
    enqueue_payloads,
    get_queue,
    job_id_for,
)
from shared.schema import DEFAULT_TOP_WORDS, make_payload, review_error

log = structlog.get_logger(__name__)

#: Reviews per job: each job costs a fixed few dozen Redis commands, so tiny jobs are slow
#: (``bench/throughput.py`` sweeps the chunk size; this is the best of its sweep).
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
    in one job wastes most of the work.
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
    """Record the batch (rows and jobs) in Redis, so ``--collect`` can write it later."""
    record = {"rows": batch.rows, "jobs": batch.jobs}
    conn.set(BATCH_KEY.format(batch.batch_id), json.dumps(record), ex=RESULT_TTL_S)
    return batch.batch_id


def load_batch(conn: Redis, batch_id: str) -> Batch:
    """The recorded batch, or DataError when the id is unknown or expired."""
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
    """Every record of the files (unreadable ones carry their error), with progress."""
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
    job_timeout: int = JOB_TIMEOUT_S,
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


def label_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many output rows are positive, negative, or carry an error."""
    counts = {"positive": 0, "negative": 0, "error": 0}
    for row in rows:
        key = "error" if row.get("error") else row.get("label")
        if key in counts:
            counts[key] += 1
    return counts
