"""The job contract a worker enforces before running anything: only jobs our producers make.

Anyone who can write to Redis can enqueue a job naming ``os.system``, an ``on_success``
callback (RQ imports and calls it) or a webhook (RQ POSTs to it).  ``job_contract_breaches``
lists what a job carries that none of our producers ever sets; ``disarm`` drops what RQ would
act on when the worker fails such a job.
"""

from __future__ import annotations

from typing import Any

from shared.queues import JOB_RETRIES
from shared.schema import JOB_FUNCTION


def job_contract_breaches(
    job: Any, functions: frozenset[str], max_retries: int = JOB_RETRIES
) -> list[str]:
    """What a job carries that none of our producers ever sets (empty: the job may run)."""
    breaches = []
    if job.func_name not in functions:
        breaches.append(f"job function {job.func_name!r} is not {JOB_FUNCTION!r}")
    for kind in ("success", "failure", "stopped"):
        if getattr(job, f"_{kind}_callback_name", None):
            breaches.append(f"an on_{kind} callback")
    if job.webhooks:
        breaches.append("webhooks")
    if (job.retries_left or 0) > max_retries or (job.number_of_retries or 0) > max_retries:
        breaches.append(f"more than {max_retries} retries")
    if any(interval for interval in job.retry_intervals or ()):
        breaches.append("retry intervals")
    if job.repeats_left or job.repeat_intervals:
        breaches.append("repeats")
    if job._dependency_ids:
        breaches.append("dependencies")
    return breaches


def disarm(job: Any) -> None:
    """Drop what RQ would act on when it fails the job: callbacks, webhooks, retries."""
    for kind in ("success", "failure", "stopped"):
        setattr(job, f"_{kind}_callback_name", None)
        setattr(job, f"_{kind}_callback", None)
    job.webhooks = []
    job.retries_left = 0
    job.repeats_left = None
