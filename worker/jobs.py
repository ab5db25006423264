"""The job function (``shared.schema.JOB_FUNCTION``) and the process's served model.

``classify_batch(payload)`` validates the payload, predicts and explains every valid review in
length-bucketed batches with the model version current when the job started, and returns a
result that follows ``shared.schema``.  The worker process loads the model once at start-up
(``SERVING.load()``) and calls ``SERVING.maybe_reload()`` between jobs.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from shared.config import Settings
from shared.schema import answer_options, validate_payload, validate_result
from shared.store import ModelStore
from worker import metrics
from worker.batching import Batcher
from worker.model.served import explain_reviews
from worker.reload import ModelHolder

log = structlog.get_logger(__name__)

SERVING: ModelHolder | None = None
#: The worker's answers for jobs it took ahead (set by ``worker.service.ReloadingWorker``).
BATCHER: Batcher | None = None


def serving() -> ModelHolder:
    """The process's holder; created from the environment if the worker did not set one."""
    global SERVING
    if SERVING is None:
        settings = Settings.from_env()
        SERVING = ModelHolder(ModelStore(settings.model_dir, settings.model_name))
    return SERVING


def classify_batch(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ job: label, scores, top words and phrases for each review; per-review errors."""
    from rq import get_current_job

    started = time.perf_counter()
    given = payload
    payload = validate_payload(payload)
    served = serving().get()  # one version answers the whole job
    job = get_current_job()
    kept = BATCHER.take(job.id, given, served.model_version) if BATCHER and job else None
    if kept is not None:  # answered with the jobs it waited with (worker.batching)
        result = kept
    else:
        top_words, tokens, sentences, schema = answer_options(payload)
        result = {
            "schema": schema,
            "model_version": served.model_version,
            "results": explain_reviews(served, payload["reviews"], top_words, tokens, sentences),
        }
    results = result["results"]
    reviews = payload["reviews"]
    validate_result(result, payload)
    metrics.job_done(results, time.perf_counter() - started)
    log.info(
        "job_done",
        job_id=job.id if job else None,
        reviews=len(reviews),
        errors=sum(1 for r in results if r.get("error")),
        model_version=served.model_version,
        latency_ms=round(1000 * (time.perf_counter() - started), 1),
    )
    return result
