"""Jobs answered together are finished together: one atomic Redis script for a whole group.

RQ finishes a job with about thirty Redis round trips (status writes, the started registry, an
execution record, the result stream, the finished registry, the worker's counters, each in its
own call or transaction).  For a one-review chat job that bookkeeping costs several times the
forward pass.  When a worker has taken a group of waiting jobs ahead (``worker.batching``), it
runs each job's function (answers come from the group's pass, so this is cheap), then moves every
job that returned from its processing list to finished in **one** server-side script
(``_FINISH``): status, result (the stream producers wait on), finished registry, retention, the
worker's counters.  A script rather than a ``MULTI`` of six commands a job: the client packs one
command instead of some 1,500 for a group of 256, which was a third of the worker's time on
one-review jobs (issue 25's profile).

Delivery is unchanged: until the script runs every job is in the worker's processing list (a
worker killed then loses none: they are recovered and run again, as after any kill), and the
script moves them all at once (scripts are atomic, and Redis refuses a script's first write
at ``maxmemory``, before anything changed, then lets it finish once it has written).  A job
whose function raised, whose status changed while it waited (cancelled, deleted), or whose
result is not to be kept, is left in the list and runs alone through RQ's own path, where it
fails or is dropped with its own error.  The script itself finishes only a job still queued
and still in this worker's list: one cancelled or deleted while the group ran is not
recreated, and one recovered by another worker (this one's liveness lapsed) is not finished
twice.  A job of a group is never marked ``started``: it goes from queued to finished.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Sequence
from typing import Any

import structlog
from rq.job import JobStatus
from rq.results import Result
from rq.utils import current_timestamp, now, utcformat

from shared import reliable

log = structlog.get_logger(__name__)

#: What RQ 3.0's success handling writes for a job (``Worker.handle_job_success``,
#: ``Job._handle_success``, ``Result.save``, ``BaseRegistry.add``), less what none of our jobs
#: has (dependents, repeats, callbacks), for each job that is still queued and still in this
#: worker's list (cancelled or deleted meanwhile, or recovered by another worker after this
#: one's liveness lapsed: left alone).  KEYS: the processing list, the worker's hash, then a
#: job's hash, result stream and finished registry for each job.  ARGV: the worker's name, the
#: end time, the result type, then eight values for each job.  Returns the ids finished.
_FINISH = """
local worker, ended, kind = ARGV[1], ARGV[2], ARGV[3]
local n = (#KEYS - 2) / 3
local done, worked = {}, 0
for i = 0, n - 1 do
  local job_key, result_key, registry = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local a = 4 + 8 * i
  local id, ttl, score, started, value = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  -- Checked with reads only: the first write must be one Redis refuses at maxmemory (HSET),
  -- so a refused script has changed nothing.
  if redis.call('HGET', job_key, 'status') == 'queued' and redis.call('LPOS', KEYS[1], id) then
    redis.call('HSET', job_key, 'status', 'finished', 'worker_name', worker,
               'started_at', started, 'ended_at', ended, 'last_heartbeat', ended)
    local entry = {'XADD', result_key, 'MAXLEN', '~', '10', '*', 'type', kind,
                   'worker_name', worker}
    if value ~= '' then
      table.insert(entry, 'return_value')
      table.insert(entry, value)
    end
    table.insert(entry, 'execution_started_at')
    table.insert(entry, ARGV[a + 5])
    table.insert(entry, 'execution_ended_at')
    table.insert(entry, ARGV[a + 6])
    redis.call(unpack(entry))
    if ttl == '-1' then
      redis.call('PERSIST', result_key)
      redis.call('ZADD', registry, '+inf', id)
      redis.call('PERSIST', job_key)
    else
      redis.call('EXPIRE', result_key, ttl)
      redis.call('ZADD', registry, score, id)
      redis.call('EXPIRE', job_key, ttl)
    end
    redis.call('LREM', KEYS[1], 1, id)
    done[#done + 1] = id
    worked = worked + tonumber(ARGV[a + 7])
  end
end
if #done > 0 then
  redis.call('HINCRBY', KEYS[2], 'successful_job_count', #done)
  redis.call('HINCRBYFLOAT', KEYS[2], 'total_working_time', tostring(worked))
end
return done
"""


def _retention(conn: Any, jobs: Sequence[Any]) -> list[tuple[bytes | None, bytes | None]]:
    """Each job's stored status and result TTL, read in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.hmget(job.key, "status", "result_ttl")
        return [tuple(row) for row in pipe.execute()]


def finish_together(worker: Any, jobs: Sequence[Any], queue: Any) -> set[str]:
    """Run each job's function and finish every job that returned in one atomic script.

    Returns the ids finished (the others are still in the worker's processing list)."""
    conn = worker.connection
    done: list[tuple[Any, Any, Any]] = []  # job, return value, started at
    for job, (status, ttl) in zip(jobs, _retention(conn, jobs), strict=True):
        if status != JobStatus.QUEUED.value.encode() or not worker.admissible(job):
            continue  # cancelled, deleted, or outside our contract: RQ's path decides
        if ttl is not None and job.result_ttl is not None and job.result_ttl != -1:
            job.result_ttl = max(job.result_ttl, int(ttl))  # a producer may have raised it
        if job.get_result_ttl(worker.default_result_ttl) == 0:
            continue  # a result not to be kept: RQ's path deletes the job
        started = now()
        try:
            value = job.perform()
            stored = "" if value is None else b64encode(job.serializer.dumps(value)).decode()
        except Exception as exc:  # it runs alone, and fails with its own error, on its turn
            log.info("group_job_left_out", job_id=job.id, reason=repr(exc)[:200])
            continue
        done.append((job, stored, started))
    if not done:
        return set()
    ended = now()
    ended_at, ended_ts, stamp = utcformat(ended), repr(ended.timestamp()), current_timestamp()
    registries: dict[str, str] = {}
    keys: list[str] = [reliable.PROCESSING_KEY.format(worker.name), worker.key]
    args: list[Any] = [worker.name, ended_at, Result.Type.SUCCESSFUL.value]
    for job, stored, started in done:
        if job.origin not in registries:
            registries[job.origin] = job.finished_job_registry.key
        ttl = job.get_result_ttl(worker.default_result_ttl)
        keys += [job.key, Result.get_key(job.id), registries[job.origin]]
        score = "+inf" if ttl == -1 else stamp + ttl
        began = repr(started.timestamp())
        worked = (ended - started).total_seconds()
        args += [job.id, ttl, score, utcformat(started), stored, began, ended_ts, worked]
    raw: Any = conn.eval(_FINISH, len(keys), *keys, *args)
    finished = {v.decode() if isinstance(v, bytes) else str(v) for v in raw or []}
    for job, _, started in done:
        if job.id not in finished:
            continue
        job.worker_name = worker.name
        job.started_at, job.ended_at, job.last_heartbeat = started, ended, ended
        job._status = JobStatus.FINISHED
        worker.observe_wait(job, queue)
        worker.count_outcome(queue, finished=True)
    log.debug(
        "group_finished", jobs=len(finished), queue=queue.name, left_out=len(jobs) - len(finished)
    )
    return finished
