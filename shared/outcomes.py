"""What became of a job: its validated answer, or why there is none (``Outcome``), read from
the status RQ keeps and the latest entry of the job's result stream.

An answer is decoded from the stream entry itself, without building RQ's ``Result`` (a third
of a chat-sized request's time in the API, issue 25); other entries (failures, stops) go
through ``Result``.  Every reader uses these: ``shared.queues.collect`` (producers), the API's
batch results and the bot's and the API's wait for one job (``shared.aqueue``).
"""

from __future__ import annotations

from base64 import b64decode
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rq.job import JobStatus
from rq.results import Result

from shared.schema import SchemaError, validate_result
from shared.serializer import JSONSerializer

#: Statuses of a job that ended.
DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
#: How RQ writes a successful result's type in its result stream (``Result.serialize``).
SUCCESSFUL_TYPE = str(Result.Type.SUCCESSFUL.value).encode()
SUCCESSFUL = Result.Type.SUCCESSFUL


@dataclass
class Outcome:
    """What became of one job: its validated result, or why there is none."""

    job_id: str
    result: dict[str, Any] | None = None
    error: str | None = None


def outcomes_of(
    conn: Any, job_ids: Sequence[str], raw_statuses: Sequence[bytes | None]
) -> list[Outcome | None]:
    """The outcome of each job given its status field (None: not ended yet); the results of
    those that ended are read in one round trip."""
    statuses = [None if raw is None else JobStatus(raw.decode()) for raw in raw_statuses]
    ended = [job_id for job_id, s in zip(job_ids, statuses, strict=True) if s in DONE]
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ended:
            pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
        entries = dict(zip(ended, pipe.execute() if ended else [], strict=True))
    outcomes: list[Outcome | None] = []
    for job_id, status in zip(job_ids, statuses, strict=True):
        if status is None:
            error = "job expired or was deleted; enqueue the input again"
            outcomes.append(Outcome(job_id, error=error))
        elif status not in DONE:
            outcomes.append(None)
        else:
            outcomes.append(ended_outcome(conn, job_id, status, entries[job_id]))
    return outcomes


def restore_entry(conn: Any, job_id: str, entry_id: bytes | str, fields: Any) -> Result:
    """RQ's ``Result`` from one entry of a job's result stream."""
    return Result.restore(
        job_id,
        entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        fields,
        connection=conn,
        serializer=JSONSerializer,
    )


def ended_outcome(conn: Any, job_id: str, status: JobStatus, entries: list[Any]) -> Outcome:
    """The outcome of a job that ended, from its latest result stream entry (``entries`` as
    XREVRANGE ... COUNT 1 gives it).  An answer is decoded without building RQ's ``Result``
    (a third of a chat-sized request's time in the API, issue 25)."""
    fields = entries[0][1] if entries else {}
    answered = status == JobStatus.FINISHED and fields.get(b"type") == SUCCESSFUL_TYPE
    if answered and b"return_value" in fields:
        return answer_outcome(job_id, JSONSerializer.loads(b64decode(fields[b"return_value"])))
    result = restore_entry(conn, job_id, *entries[0]) if entries else None
    if status != JobStatus.FINISHED and result is not None and result.type == SUCCESSFUL:
        result = None  # an old success of a job that was re-run and then failed
    return result_outcome(job_id, result, status.value)


def answer_outcome(job_id: str, value: Any) -> Outcome:
    """The Outcome of a job's successful return value: the answer, if it keeps our contract."""
    try:
        return Outcome(job_id, result=validate_result(value))
    except SchemaError as exc:
        return Outcome(job_id, error=f"worker answered outside the contract: {exc}")


def result_outcome(job_id: str, result: Result | None, what: str = "") -> Outcome:
    """The Outcome a job's latest Result gives: the validated answer, or why there is none."""
    if result is not None and result.type == Result.Type.SUCCESSFUL:
        return answer_outcome(job_id, result.return_value)
    reason = ((result.exc_string if result else None) or "").strip().splitlines()
    what = what or (result.type.name.lower() if result is not None else "ended")
    return Outcome(job_id, error=f"job {what}: {reason[-1] if reason else 'no reason'}")
