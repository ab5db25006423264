"""When an existing job may answer again: reuse, sharing and cancellation of jobs by id.

Job ids come from the content, the queue and the serving version (``shared.queues.job_id_for``),
so the same reviews asked twice meet the same job.  Rules (used by every producer through
``shared.queues.enqueue_payloads``):

* a job in flight is **shared**: marked, and its retention raised to the longest any holder
  needs (the worker re-reads it when the job ends);
* a finished job is **reused** only if the version its payload names answered it;
* a failed or stopped job, or an answer from another version, is **replaced**;
* a job is **cancelled** only by the request that created it, only while still queued, and
  only if nobody came to share it since (one Lua script, so no check-then-act race).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq.job import Job, JobStatus
from rq.results import Result

from shared import reliable
from shared.outcomes import restore_entry

#: Set on a job that a second request or batch also counts on: its creator no longer cancels it.
SHARED_FIELD = "sentiment_shared"
#: Statuses of a job whose answer is coming or here: it is reused, not enqueued again.
IN_FLIGHT = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def expected_version(payload: dict[str, Any]) -> str:
    return str(payload.get("options", {}).get("model_version", ""))


def reuse(status: str | None, answered_by: str | None, expected: str) -> str:
    """What to do with an existing job of the same id: ``reuse`` it (in flight, or answered by
    the version expected), ``create`` it (none), or ``replace`` it (it failed, was stopped, or
    its answer came from another version: a worker that had not reloaded yet)."""
    if status is None:
        return "create"
    if status in IN_FLIGHT:
        return "reuse"
    if status == JobStatus.FINISHED and (not expected or answered_by in (expected, None)):
        return "reuse"
    return "replace"


def answered_by(raw_results: Any, job_id: str, conn: Redis) -> str | None:
    """The model version in a job's latest result (``XREVRANGE ... COUNT 1``), if readable."""
    for entry_id, fields in raw_results or []:
        value = restore_entry(conn, job_id, entry_id, fields).return_value
        if isinstance(value, dict):
            return str(value.get("model_version", ""))
    return None


# KEYS: job hash.  ARGV: result TTL, failure TTL.  A job still in flight is marked shared and
# answers at least as long as its new holder needs (the worker reads these fields at the end).
SHARE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], '1')
for i, field in ipairs({'result_ttl', 'failure_ttl'}) do
  local current = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if current ~= -1 and current < tonumber(ARGV[i]) then
    redis.call('HSET', KEYS[1], field, ARGV[i])
  end
end
return 1
"""

# KEYS: job hash, queue list, results stream.  ARGV: job id.  Deletes a job nobody else counts
# on while it is still queued; returns 1 when it did.
CANCEL_SCRIPT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
return 1
"""


def share_jobs(conn: Redis, job_ids: Sequence[str], result_ttl: int, failure_ttl: int) -> None:
    """Mark jobs in flight as shared and raise their retention to at least ours."""
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.eval(SHARE_SCRIPT, 1, Job.key_for(job_id), result_ttl, failure_ttl, SHARED_FIELD)
        pipe.execute()


def cancel_keys(job_id: str, queue: str) -> tuple[str, str, str]:
    """The keys the cancel script touches."""
    return Job.key_for(job_id), f"{reliable.RQ_QUEUE_PREFIX}{queue}", Result.get_key(job_id)


def extend_results(conn: Redis, job_ids: Sequence[str], ttl: int) -> None:
    """Keep finished jobs (their record and result) for at least ``ttl`` more seconds."""
    keys = [k for job_id in job_ids for k in (Job.key_for(job_id), Result.get_key(job_id))]
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        remaining = pipe.execute()
        for key, left in zip(keys, remaining, strict=True):
            if 0 <= left < ttl:  # -1: no expiry (nothing to extend), -2: gone
                pipe.expire(key, ttl)
        pipe.execute()
