"""Bulk batches, streamed: plan an input into jobs, record the batch, enqueue, collect, write.

A batch answers every input record: an invalid one with its error at once, the valid ones
through jobs of up to ``chunk_size`` reviews with deterministic ids (re-running enqueues nothing
twice and picks up finished results).  The output has exactly one line per input record, in
input order: the result, or the error for that record.

Memory stays flat whatever the input size: the input is read twice as a stream (a first pass
counts and fingerprints it, the second plans it), planned in windows of ``WINDOW_ROWS`` records,
and each window is recorded in Redis as one list element and enqueued before the next is read;
results are collected and written window by window.  Windows are recorded under a key of this
submission alone and renamed into place at the end, so two submissions of the same input at once
each leave a whole, consistent record.  Jobs are made for the version serving at submission
(``Options.model_version``): a batch enqueued before a publish is answered by whichever version
each worker serves when it takes the job, and every row says which.  Within a window, reviews of
similar length share a job (a job's forward pass is padded to its longest review).  Used by
``sentiment-enqueue``, ``sentiment-run``, the HTTP API and the benchmarks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from redis import Redis

from shared import metrics
from shared.announcements import served_version
from shared.collector import paused
from shared.config import Settings
from shared.datasets import DataError, Review, read_reviews
from shared.outcomes import Outcome
from shared.progress import progress
from shared.queues import (
    FAILURE_TTL_S,
    JOB_TIMEOUT_S,
    QUEUE_BULK,
    RESULT_TTL_S,
    collect,
    enqueue_payloads,
    get_queue,
    job_id_for,
)
from shared.schema import DEFAULT_TOP_WORDS, MAX_ID_CHARS, make_payload, review_error

log = structlog.get_logger(__name__)

#: Reviews per job: each job costs a fixed few dozen Redis commands, so tiny jobs are slow
#: (``bench/throughput.py`` sweeps the chunk size; this is the best of its sweep).
DEFAULT_CHUNK_SIZE = 256
#: Records planned, recorded and collected together (memory is bounded by one window).
WINDOW_ROWS = 4096
#: ... or fewer, when their texts add up to this many characters.
WINDOW_CHARS = 8_000_000
BATCH_KEY = "sentiment:batch:{}"
WINDOWS_KEY = "sentiment:batch:{}:windows"

#: Something that yields the input's records, afresh at every call (it is read twice).
Source = Callable[[], Iterable[Review]]


@dataclass(frozen=True)
class Options:
    """How a batch is planned and enqueued (part of its fingerprint)."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    top_words: int = DEFAULT_TOP_WORDS
    queue: str = QUEUE_BULK
    sentences: bool = False
    job_timeout: int = JOB_TIMEOUT_S
    result_ttl: int = RESULT_TTL_S
    failure_ttl: int = FAILURE_TTL_S
    #: The version serving when the batch is submitted ("" until known: ``submit`` reads it).
    model_version: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, **choices: Any) -> Options:
        """Job timeout and retention from the settings; ``choices`` (chunk size, top words,
        queue) from the command line or the request."""
        return cls(
            job_timeout=settings.job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.failure_ttl,
            **choices,
        )


@dataclass
class Window:
    """Consecutive input records and the jobs that answer the valid ones."""

    rows: list[list[Any]] = field(default_factory=list)  # [id, line, error or None]
    jobs: list[tuple[str, list[int]]] = field(default_factory=list)  # job id -> row offsets

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "jobs": self.jobs}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Window:
        data = json.loads(raw)
        return cls(data["rows"], [(j, list(r)) for j, r in data["jobs"]])


@dataclass(frozen=True)
class BatchInfo:
    """A recorded batch: its id, size, and who submitted it (``""``: an operator's command)."""

    batch_id: str
    rows: int
    jobs: int
    windows: int
    invalid: int
    owner: str = ""


def new_batch_id() -> str:
    """An id nobody can compute from the input (API batches); 24 hex digits like a fingerprint."""
    return secrets.token_hex(12)


def file_source(files: Sequence[Path], split: str = "test") -> Source:
    """The records of ``files`` in order (unreadable ones carry their error)."""

    def records() -> Iterator[Review]:
        for file in files:
            yield from read_reviews(file, split=split, errors="keep")

    return records


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    return progress(total=total, desc=desc, unit=" reviews", disable=not enabled)


def fingerprint(source: Source, options: Options, progress: bool = False) -> tuple[str, int]:
    """The batch id (a hash of every record and of the options) and the number of records."""
    digest = hashlib.sha256(
        json.dumps(
            [options.chunk_size, options.top_words, options.queue]
            + ([True] if options.sentences else [])  # batches without sentences keep their ids
        ).encode()
    )
    count = 0
    with _progress(None, "read", progress) as bar:
        for review in source():
            digest.update(
                json.dumps([review.id, review.line, review.text, review.error]).encode(
                    "utf-8", "surrogatepass"
                )
            )
            count += 1
            bar.update(1)
    return digest.hexdigest()[:24], count


def row_error(review: Review) -> str | None:
    """Why a record gets no answer from a worker (read error, bad id, bad text), or None."""
    if review.error:
        return review.error
    if not review.id or len(review.id) > MAX_ID_CHARS:
        return f"review id must have 1-{MAX_ID_CHARS} characters (has {len(review.id)})"
    return review_error(review.text)


def plan_window(reviews: Sequence[Review], options: Options) -> tuple[Window, list[dict[str, Any]]]:
    """Rows for every record, and jobs of ``chunk_size`` valid reviews of similar length."""
    window = Window()
    valid: list[int] = []
    for offset, review in enumerate(reviews):
        error = row_error(review)
        window.rows.append([review.id, review.line, error])
        if error is None:
            valid.append(offset)
    valid.sort(key=lambda i: len(reviews[i].text))  # stable: ties keep input order
    payloads = []
    for start in range(0, len(valid), options.chunk_size):
        idx = valid[start : start + options.chunk_size]
        payload = make_payload(
            [(reviews[i].id, reviews[i].text) for i in idx],
            options.top_words,
            options.model_version,
            sentences=options.sentences,
        )
        window.jobs.append((job_id_for(payload, options.queue), idx))
        payloads.append(payload)
    return window, payloads


def windows_of(
    reviews: Iterable[Review], options: Options
) -> Iterator[tuple[Window, list[dict[str, Any]]]]:
    """The input cut into windows (``WINDOW_ROWS`` records or ``WINDOW_CHARS`` characters)."""
    chunk: list[Review] = []
    chars = 0
    for review in reviews:
        chunk.append(review)
        chars += len(review.text)
        if len(chunk) >= WINDOW_ROWS or chars >= WINDOW_CHARS:
            yield plan_window(chunk, options)
            chunk, chars = [], 0
    if chunk:
        yield plan_window(chunk, options)


def submit(
    conn: Redis,
    source: Source,
    options: Options | None = None,
    progress: bool = True,
    batch_id: str | None = None,
    owner: str = "",
) -> BatchInfo:
    """Fingerprint the input, then plan, enqueue and record it window by window.

    ``batch_id`` defaults to the input's fingerprint (a rerun of the same command finds its
    batch again); the API passes a random one and its caller as ``owner``."""
    options = options or Options()
    if not options.model_version:
        options = dataclasses.replace(options, model_version=served_version(conn))
    fingerprinted, total = fingerprint(source, options, progress=progress and sys.stderr.isatty())
    batch_id = batch_id or fingerprinted
    if total == 0:
        raise DataError("input", "no reviews found")
    key, windows_key = BATCH_KEY.format(batch_id), WINDOWS_KEY.format(batch_id)
    staging = f"{windows_key}:staging:{secrets.token_hex(8)}"
    queue = get_queue(options.queue, conn)
    jobs = windows = invalid = 0
    with _progress(total, "enqueue", progress) as bar:
        for window, payloads in windows_of(source(), options):
            enqueue_payloads(
                queue,
                payloads,
                timeout=options.job_timeout,
                ids=[job_id for job_id, _ in window.jobs],
                result_ttl=options.result_ttl,
                failure_ttl=options.failure_ttl,
            )
            with conn.pipeline(transaction=False) as pipe:
                pipe.rpush(staging, window.to_json())
                pipe.expire(staging, options.result_ttl)
                pipe.execute()
            jobs += len(window.jobs)
            windows += 1
            invalid += sum(1 for row in window.rows if row[2])
            bar.update(len(window.rows))
    info = BatchInfo(batch_id, total, jobs, windows, invalid, owner)
    with conn.pipeline() as pipe:  # MULTI: the windows and their counts appear together
        pipe.rename(staging, windows_key)
        pipe.hset(
            key,
            mapping={
                "rows": total,
                "jobs": jobs,
                "windows": windows,
                "invalid": invalid,
                "at": time.time(),
                "owner": owner,
                "state": "ready",
                "model_version": options.model_version,
            },
        )
        pipe.expire(key, options.result_ttl)
        pipe.execute()
    log.info(
        "batch_enqueued",
        batch_id=batch_id,
        reviews=total,
        jobs=jobs,
        invalid=invalid,
        queue=options.queue,
        model_version=options.model_version or None,
    )
    return info


def load(conn: Redis, batch_id: str) -> BatchInfo:
    """The recorded batch; DataError when the id is unknown, expired or was never completed."""
    raw: Any = conn.hgetall(BATCH_KEY.format(batch_id))
    if not raw:
        raise DataError(batch_id, "unknown or expired batch id")
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    if meta.get("state", "ready") != "ready":
        raise DataError(batch_id, f"the batch is {meta['state']}: {meta.get('error', '')}".strip())
    return BatchInfo(
        batch_id,
        int(meta["rows"]),
        int(meta["jobs"]),
        int(meta["windows"]),
        int(meta["invalid"]),
        meta.get("owner", ""),
    )


def results(
    conn: Redis,
    batch_id: str,
    timeout: float | None = None,
    progress: bool = True,
    on_window: Callable[[int], None] | None = None,
    tally: Counter[str] | None = None,
    texts: bool = False,
) -> Iterator[dict[str, Any]]:
    """One output row per input record, in order, as each window's jobs end.

    ``texts``: each answered row also carries its review's text as ``_text`` (read from the
    jobs' payloads; for ``shared.report``; never written to an output file).

    ``tally`` (optional) counts the rows by outcome: ``positive``/``negative``, ``invalid`` (the
    input was refused: an empty line, say) and ``failed`` (no answer: the job timed out, failed
    or expired, or the wait ended), so a command can exit non-zero when lines failed."""
    info = load(conn, batch_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    with _progress(info.rows, "results", progress) as bar:
        for index in range(info.windows):
            raw = conn.lindex(WINDOWS_KEY.format(batch_id), index)
            if raw is None:
                raise DataError(batch_id, "the batch record expired while it was collected")
            window = Window.from_json(raw)  # type: ignore[arg-type]
            sizes = {job_id: len(idx) for job_id, idx in window.jobs}
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            # The window's answers are trees of dicts and lists (40,000 for 256 reviews
            # answered per sentence): the cyclic collector would walk them again and again
            # while they pile up (shared.collector).
            with paused():
                outcomes = collect(
                    conn,
                    [job_id for job_id, _ in window.jobs],
                    timeout=remaining,
                    on_done=lambda o, sizes=sizes: bar.update(sizes[o.job_id]),
                )
                bar.update(sum(1 for row in window.rows if row[2]))
                out = window_rows(window, outcomes, tally)
                del outcomes
            if texts:
                from shared.report import texts_of_jobs

                found = texts_of_jobs(conn, [job_id for job_id, _ in window.jobs])
                for row in out:
                    row["_text"] = found.get(str(row["id"]))
            if on_window is not None:
                on_window(index)
            yield from out


def window_rows(
    window: Window, outcomes: dict[str, Outcome], tally: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """The output rows of a window once its jobs ended: a result or an error for every record
    (``tally``: see :func:`results`)."""
    out: list[dict[str, Any]] = [
        {"id": rid, "line": line, "error": error} for rid, line, error in window.rows
    ]
    failed: set[int] = set()
    for job_id, idx in window.jobs:
        outcome = outcomes[job_id]
        if outcome.result is None:
            for i in idx:
                out[i]["error"] = outcome.error
            failed.update(idx)
            continue
        version = outcome.result["model_version"]
        for i, answer in zip(idx, outcome.result["results"], strict=True):
            out[i].update({k: v for k, v in answer.items() if k != "id"})
            out[i]["model_version"] = version
    metrics.count_collected(out)
    if tally is not None:
        for i, row in enumerate(out):
            kind = "failed" if i in failed else "invalid" if row.get("error") else row.get("label")
            tally[str(kind)] += 1
    return out


#: Exit status of a producer run in which some lines got no answer (their rows carry the error).
EXIT_LINES_FAILED = 1


def failed_lines_message(prog: str, tally: Counter[str]) -> str | None:
    """The line a command prints when lines got no answer, or None when every line has one."""
    if not tally["failed"]:
        return None
    total = sum(tally.values())
    return (
        f"{prog}: {tally['failed']} of {total} lines got no answer (timed out, failed or "
        "expired; their rows say why): run the same command again to retry them"
    )
