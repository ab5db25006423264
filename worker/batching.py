"""Dynamic batching: waiting interactive jobs share one forward pass.

A chat message or an API call is a job of one review, and a forward pass of one review costs
about as much as one of dozens (the model's fixed cost: dispatch, padding, the explainer's
trace).  Before a worker runs an interactive job it takes, without waiting, up to
``WORKER_BATCH_JOBS - 1`` more jobs already waiting on the same queue into its processing list
(``shared.reliable.take_more``: the same reliable take as every job, so a worker killed at any
point loses none of them; those beyond what one pass of ``MAX_PASS_REVIEWS`` reviews holds go
back to the queue's head for other workers), answers all their reviews in one length-bucketed
pass, and returns the group, which the worker finishes with one script (``worker.together``):
every job still gets its own status, result, retention and metrics, in queue order.  Nothing
waits for more jobs to arrive.  A job that waited alone is a group of one: it pays one Redis
call to look for others, and is finished the same way (a few round trips instead of RQ's thirty,
so a chat message is answered sooner than without batching), unless it holds more than
``MAX_PASS_REVIEWS`` reviews (it then takes RQ's path, with a heartbeat while it runs).

A job outside our contract, or whose payload does not validate, is left out of the pass and
fails alone when its turn comes; so does a job whose pass failed (it is then answered alone).
An answer is used only for the job it was made for, with the very payload object the pass read
(the job object the group finishes; a job that later runs alone through RQ is fetched again
and answered again), by the version that serves when the job runs (a reload in between drops
every kept answer).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from redis import Redis
from rq.job import Job

from shared import reliable
from shared.config import env_int
from shared.queues import QUEUE_INTERACTIVE
from shared.schema import answer_options, validate_payload

log = structlog.get_logger(__name__)

#: Jobs answered by one forward pass at most (1: no batching).
DEFAULT_BATCH_JOBS = 256
#: Reviews in one pass at most: a pass runs before its jobs' heartbeats start, so it stays short.
MAX_PASS_REVIEWS = 256


def batch_jobs_setting(env: dict[str, str] | None = None) -> int:
    """``WORKER_BATCH_JOBS`` (1-256; 1 turns batching off)."""
    source = dict(os.environ) if env is None else env
    return env_int(source, "WORKER_BATCH_JOBS", DEFAULT_BATCH_JOBS, 1, 256)


def answer_payloads(
    served: Any, payloads: Sequence[dict[str, Any]], explain: Callable[..., list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One job result per payload; payloads with the same options share one ``explain`` call."""
    groups: dict[tuple[int, bool, bool, int], list[int]] = {}
    for i, payload in enumerate(payloads):
        groups.setdefault(answer_options(payload), []).append(i)
    answers: list[dict[str, Any]] = [{} for _ in payloads]
    for (top_words, tokens, sentences, schema), members in groups.items():
        reviews = [review for i in members for review in payloads[i]["reviews"]]
        results = explain(served, reviews, top_words, tokens, sentences)
        start = 0
        for i in members:
            n = len(payloads[i]["reviews"])
            answers[i] = {
                "schema": schema,
                "model_version": served.model_version,
                "results": results[start : start + n],
            }
            start += n
    return answers


class Batcher:
    """Answers kept for jobs taken ahead, by job id (see the module docstring)."""

    def __init__(
        self,
        conn: Redis,
        worker_name: str,
        serializer: Any,
        admissible: Callable[[Any], bool],
        max_jobs: int = DEFAULT_BATCH_JOBS,
    ) -> None:
        self.conn = conn
        self.worker_name = worker_name
        self.serializer = serializer
        self.admissible = admissible
        self.max_jobs = max_jobs
        self._kept: dict[str, tuple[str, Any, dict[str, Any]]] = {}

    def clear(self) -> None:
        self._kept.clear()

    def prepare(
        self,
        job: Any,
        queue: Any,
        served: Any,
        explain: Callable[..., list[dict[str, Any]]],
    ) -> list[Any]:
        """Before ``job`` runs: answer it and the jobs waiting behind it in one pass.

        Returns the jobs the pass answered, in queue order, to be finished together
        (``worker.together``); empty when RQ's path runs it (see the module docstring)."""
        if self.max_jobs <= 1 or queue.name != QUEUE_INTERACTIVE or job.id in self._kept:
            return []
        self._kept.clear()  # answers of jobs no longer ahead of us (cancelled, taken back)
        taken = reliable.take_more(self.conn, self.worker_name, queue.key, self.max_jobs - 1)
        candidates = [job]
        if taken:
            fetched = Job.fetch_many(taken, connection=self.conn, serializer=self.serializer)
            candidates += [j for j in fetched if j is not None]
        members: list[tuple[Any, dict[str, Any]]] = []
        reviews = 0
        for index, candidate in enumerate(candidates):
            if not self.admissible(candidate):
                continue
            try:
                payload = validate_payload(candidate.args[0])
            except Exception as exc:  # it fails alone, with its own error, when its turn comes
                log.info("batch_job_left_out", job_id=candidate.id, reason=repr(exc)[:200])
                continue
            if members and reviews + len(payload["reviews"]) > MAX_PASS_REVIEWS:
                # More than one pass holds: the rest go back for any worker to take.
                surplus = [c.id for c in candidates[index:]]
                reliable.give_back(self.conn, self.worker_name, queue.key, surplus)
                break
            members.append((candidate, payload))
            reviews += len(payload["reviews"])
        if not members or (len(members) == 1 and reviews > MAX_PASS_REVIEWS):
            return []  # nothing to answer here, or one big job: RQ's path, with its heartbeat
        reliable.keep_alive(self.conn, self.worker_name)  # the pass runs before any heartbeat
        try:
            answers = answer_payloads(served, [p for _, p in members], explain)
        except Exception as exc:  # each job is then answered alone
            log.warning("batch_pass_failed", jobs=len(members), reason=repr(exc))
            return []
        for (member, _), answer in zip(members, answers, strict=True):
            self._kept[member.id] = (served.model_version, member.args[0], answer)
        if len(members) > 1:
            log.info("batch_pass", jobs=len(members), reviews=reviews, taken_ahead=len(taken))
        return [member for member, _ in members]

    def take(self, job_id: str, payload: Any, model_version: str) -> dict[str, Any] | None:
        """The kept answer of ``job_id`` if it was made from this payload object (the job's
        argument as it was fetched, before validation) by this version."""
        kept = self._kept.pop(job_id, None)
        if kept is None or kept[0] != model_version or kept[1] is not payload:
            return None
        return kept[2]
