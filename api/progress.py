"""A batch's progress, read from the status fields of its jobs (nothing else is loaded)."""

from __future__ import annotations

import re
from typing import Any

from api.errors import ApiError
from shared import batches

BATCH_ID = re.compile(r"^[0-9a-f]{24}$")


def check_batch_id(batch_id: str) -> None:
    if not BATCH_ID.match(batch_id):
        raise ApiError(404, f"no batch {batch_id[:64]!r} (ids are 24 hex digits)")


async def batch_progress(aconn: Any, batch_id: str) -> dict[str, Any]:
    """Rows and jobs of a batch, and how many jobs have ended (status fields only)."""
    meta_raw = await aconn.hgetall(batches.BATCH_KEY.format(batch_id))
    if not meta_raw:
        raise ApiError(404, f"batch {batch_id}: unknown or expired batch id")
    meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
    windows = await aconn.lrange(batches.WINDOWS_KEY.format(batch_id), 0, -1)
    jobs: list[tuple[str, int]] = []
    for raw in windows:
        window = batches.Window.from_json(raw)
        jobs.extend((job_id, len(rows)) for job_id, rows in window.jobs)
    counts = {"finished": 0, "failed": 0}
    answered = 0
    async with aconn.pipeline(transaction=False) as pipe:
        for job_id, _ in jobs:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = await pipe.execute() if jobs else []
    for (_, size), raw in zip(jobs, statuses, strict=True):
        status = raw.decode() if raw else "expired"
        if status == "finished":
            counts["finished"] += 1
            answered += size
        elif status in ("failed", "stopped", "canceled", "expired"):
            counts["failed"] += 1
            answered += size
    rows, invalid = int(meta["rows"]), int(meta["invalid"])
    done = counts["finished"] + counts["failed"]
    return {
        "batch_id": batch_id,
        "rows": rows,
        "invalid": invalid,
        "jobs": len(jobs),
        "jobs_finished": counts["finished"],
        "jobs_failed": counts["failed"],
        "rows_done": answered + invalid,
        "progress": round((answered + invalid) / rows, 4) if rows else 1.0,
        "complete": done == len(jobs),
        "results_url": f"/v1/batches/{batch_id}/results",
    }
