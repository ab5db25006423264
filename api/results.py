"""A batch's results, streamed from the event loop with a deadline.

Exactly ``sentiment-enqueue``'s output for the same file (one line per input line, in order; the
same row building, ``shared.batches.window_rows``), but nothing here holds a thread: job statuses
and results are read with ``redis.asyncio`` and the waits are ``asyncio.sleep``.  A client that
goes away ends the stream at its next wait (Starlette cancels it), and every stream ends within
``wait_s``: rows whose job has not ended by then say so, and a later GET picks them up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from rq.job import Job, JobStatus
from rq.results import Result

from shared import batches
from shared.outcomes import DONE, Outcome, ended_outcome
from shared.output import RowFormat

#: Characters per piece sent (fewer, larger writes).
PIECE_CHARS = 1 << 16
POLL_S = (0.05, 0.5)


async def window_outcomes(
    aconn: Any, conn: Any, job_ids: list[str], deadline: float, wait_s: float
) -> dict[str, Outcome]:
    """The outcome of every job, once each ended or the deadline passed."""
    pending = list(dict.fromkeys(job_ids))
    outcomes: dict[str, Outcome] = {}
    pause = POLL_S[0]
    while pending:
        async with aconn.pipeline(transaction=False) as pipe:
            for job_id in pending:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = await pipe.execute()
        ended: list[tuple[str, JobStatus]] = []
        for job_id, raw in zip(pending, statuses, strict=True):
            if raw is None:
                outcomes[job_id] = Outcome(
                    job_id, error="job expired or was deleted; enqueue the input again"
                )
            elif (status := JobStatus(raw.decode())) in DONE:
                ended.append((job_id, status))
        if ended:
            async with aconn.pipeline(transaction=False) as pipe:
                for job_id, _ in ended:
                    pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
                latest = await pipe.execute()
            for (job_id, status), entries in zip(ended, latest, strict=True):
                outcomes[job_id] = ended_outcome(conn, job_id, status, entries)
        pending = [j for j in pending if j not in outcomes]
        if not pending:
            break
        if time.monotonic() >= deadline:
            for job_id in pending:
                outcomes[job_id] = Outcome(
                    job_id, error=f"not answered within {wait_s:g} s; GET the results again later"
                )
            break
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, POLL_S[1])
    return outcomes


async def stream(
    aconn: Any,
    conn: Any,
    batch_id: str,
    windows: int,
    formatter: RowFormat,
    deadline: float,
    wait_s: float,
) -> AsyncIterator[str]:
    """The batch's output, in pieces of about ``PIECE_CHARS`` characters; jobs still running
    at ``deadline`` (``time.monotonic()``) get an error row that names ``wait_s``."""
    piece, size = [formatter.header()], 0
    for index in range(windows):
        raw = await aconn.lindex(batches.WINDOWS_KEY.format(batch_id), index)
        if raw is None:  # expired while read: every row still gets its line
            raise batches.DataError(batch_id, "the batch record expired while it was read")
        window = batches.Window.from_json(raw)
        job_ids = [job_id for job_id, _ in window.jobs]
        outcomes = await window_outcomes(aconn, conn, job_ids, deadline, wait_s)
        for row in batches.window_rows(window, outcomes):
            line = formatter.line(row)
            piece.append(line)
            size += len(line)
            if size >= PIECE_CHARS:
                yield "".join(piece)
                piece, size = [], 0
    yield "".join(piece)
