"""A batch's progress, read from the status fields of its jobs (nothing else is loaded).

A batch belongs to the token that uploaded it: any other caller is told there is no such batch
(404, the same answer as for an id that never existed)."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rq.job import Job

from api.errors import ApiError
from shared import batches

BATCH_ID = re.compile(r"^[0-9a-f]{24}$")


def check_batch_id(batch_id: str) -> None:
    if not BATCH_ID.match(batch_id):
        raise ApiError(404, f"no batch {batch_id[:64]!r} (ids are 24 hex digits)")


@dataclass
class _Known:
    """What one API process remembers of a batch between polls: its jobs (windows never change
    once recorded) and which of them finished (a finished job stays finished)."""

    at: str
    jobs: list[tuple[str, int]]  # job id, rows it answers
    finished: set[str] = field(default_factory=set)


#: Statuses of a job that ended without an answer (its rows carry the error).
ENDED_UNANSWERED = ("failed", "stopped", "canceled", "expired")
#: Batches remembered (least recently polled forgotten first).
REMEMBERED = 128
_known: OrderedDict[str, _Known] = OrderedDict()


async def _jobs_of(aconn: Any, batch_id: str, at: str) -> _Known:
    known = _known.get(batch_id)
    if known is None or known.at != at:  # new, or submitted again since
        windows = await aconn.lrange(batches.WINDOWS_KEY.format(batch_id), 0, -1)
        jobs: list[tuple[str, int]] = []
        for raw in windows:
            jobs.extend((job_id, len(rows)) for job_id, rows in batches.Window.from_json(raw).jobs)
        known = _Known(at, jobs)
    _known[batch_id] = known
    _known.move_to_end(batch_id)
    while len(_known) > REMEMBERED:
        _known.popitem(last=False)
    return known


async def batch_meta(aconn: Any, batch_id: str, caller: str) -> dict[str, str]:
    """The batch's record, if ``caller`` owns it; 404 otherwise (unknown, expired, not theirs)."""
    check_batch_id(batch_id)
    meta_raw = await aconn.hgetall(batches.BATCH_KEY.format(batch_id))
    meta = {k.decode(): v.decode() for k, v in (meta_raw or {}).items()}
    if not meta or meta.get("owner") != caller:
        raise ApiError(404, f"batch {batch_id}: unknown or expired batch id")
    return meta


async def batch_progress(aconn: Any, batch_id: str, caller: str) -> dict[str, Any]:
    """Rows and jobs of a batch, and how many jobs have ended.

    A page polls this twice a second: the batch's windows are read once per process, and each
    poll reads only the status field of the jobs not yet seen finished."""
    meta = await batch_meta(aconn, batch_id, caller)
    state = meta.get("state", "ready")
    if state != "ready":
        return {
            "batch_id": batch_id,
            "state": state,
            "error": meta.get("error") or None,
            "complete": state == "failed",
            "progress": 0.0,
            "results_url": f"/v1/batches/{batch_id}/results",
        }
    known = await _jobs_of(aconn, batch_id, meta.get("at", ""))
    open_jobs = [(job_id, size) for job_id, size in known.jobs if job_id not in known.finished]
    async with aconn.pipeline(transaction=False) as pipe:
        for job_id, _ in open_jobs:
            pipe.hget(Job.key_for(job_id), "status")
        statuses = await pipe.execute() if open_jobs else []
    failed = failed_rows = 0
    for (job_id, size), raw in zip(open_jobs, statuses, strict=True):
        status = raw.decode() if raw else "expired"
        if status == "finished":
            known.finished.add(job_id)
        elif status in ENDED_UNANSWERED:  # a rerun of the producer may run it again: not kept
            failed += 1
            failed_rows += size
    # Per window entry (two windows may share a job: the same reviews, the same job id).
    finished = [size for job_id, size in known.jobs if job_id in known.finished]
    answered = sum(finished) + failed_rows
    rows, invalid = int(meta["rows"]), int(meta["invalid"])
    return {
        "batch_id": batch_id,
        "state": state,
        "model_version": meta.get("model_version") or None,
        "rows": rows,
        "invalid": invalid,
        "jobs": len(known.jobs),
        "jobs_finished": len(finished),
        "jobs_failed": failed,
        "rows_done": answered + invalid,
        "progress": round((answered + invalid) / rows, 4) if rows else 1.0,
        "complete": len(finished) + failed == len(known.jobs),
        "results_url": f"/v1/batches/{batch_id}/results",
    }
