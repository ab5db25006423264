"""The job function (``shared.schema.JOB_FUNCTION``) and the model it serves, with hot reload.

``classify_batch(payload)`` validates the payload, predicts and explains every valid review in
length-bucketed batches with the model version current when the job started, and returns a
result that follows ``shared.schema``.  The worker process loads the model once at start-up
(``SERVING.load()``) and calls ``SERVING.maybe_reload()`` between jobs.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from shared.config import Settings
from shared.schema import SCHEMA_VERSION, review_error, validate_payload, validate_result
from shared.store import ModelStore, StoreError
from worker.explain import Explainer, phrase_texts
from worker.predictor import SMOKE_TEXTS, Predictor, load_predictor

log = structlog.get_logger(__name__)

#: How often a worker's watcher thread ``stat``s LATEST (about 36 us per check).
WATCH_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Served:
    """One loaded model version: predictor (encoding) and explainer (scores + weights)."""

    predictor: Predictor
    explainer: Explainer

    @property
    def version(self) -> str:
        return self.predictor.name

    def info(self) -> dict[str, Any]:
        """What a worker announces about the version it serves (shown by the bot's /model)."""
        version = self.predictor.version
        manifest = version.manifest if version else {}
        return {
            "model_version": self.version,
            "test_accuracy": version.test_accuracy if version else None,
            "created": manifest.get("created"),
            "architecture": manifest.get("architecture"),
        }


def load_served(store: ModelStore, version: str = "LATEST") -> Served:
    """Load and check a version, and trace its explainer, so its first job is not slow."""
    predictor = load_predictor(store.resolve(version))
    served = Served(predictor, Explainer(predictor.model))
    explained = served.explainer.explain_ids([e.ids for e in predictor.encode(list(SMOKE_TEXTS))])
    if any(not math.isfinite(e.log_odds) for e in explained):
        raise StoreError(f"{predictor.name}: smoke explanation is not finite")
    return served


class ModelHolder:
    """The model a worker process serves; swaps to a new LATEST only after it loads and checks.

    With ``watch()`` a background thread notices a new LATEST within ``WATCH_INTERVAL_S``, loads,
    checks and warms it while the current version keeps serving; ``maybe_reload()``, called
    between jobs, then swaps in O(1).  Without a watcher, ``maybe_reload()`` does the ``stat``
    and the load itself (tests, plain ``rq worker``).
    """

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.current: Served | None = None
        self._stamp: tuple[int, int] | None = None
        self._ready: tuple[Served, float] | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def load(self) -> Served:
        self._stamp = self.store.latest_stamp()
        self.current = load_served(self.store)
        log.info("model_loaded", model_version=self.current.version)
        return self.current

    def watch(self, interval: float = WATCH_INTERVAL_S) -> None:
        """Start the background loader (idempotent)."""
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, args=(interval,), name="model-watcher", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            candidate = self._check()
            if candidate is not None:
                with self._lock:
                    self._ready = candidate

    def _check(self) -> tuple[Served, float] | None:
        """Load the version LATEST names if it changed and differs from what is served."""
        stamp = self.store.latest_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        started = time.perf_counter()
        try:
            target = self.store.latest()
            serving = self._ready[0] if self._ready else self.current
            if serving is not None and target == serving.version.rpartition("/")[2]:
                return None
            return load_served(self.store), started
        except (StoreError, OSError) as exc:
            log.error(
                "model_reload_failed",
                reason=str(exc),
                keeps_serving=self.current.version if self.current else None,
            )
            return None

    def maybe_reload(self) -> bool:
        """Swap to a newly loaded version, if any; returns whether it swapped."""
        if self._watcher is not None:
            with self._lock:
                ready, self._ready = self._ready, None
        else:
            ready = self._check()
        if ready is None:
            return False
        candidate, started = ready
        old = self.current.version if self.current else None
        self.current = candidate
        log.info(
            "model_reloaded",
            old_version=old,
            model_version=candidate.version,
            load_ms=round(1000 * (time.perf_counter() - started), 1),
        )
        return True

    def get(self) -> Served:
        return self.current if self.current is not None else self.load()


SERVING: ModelHolder | None = None


def serving() -> ModelHolder:
    """The process's holder; created from the environment if the worker did not set one."""
    global SERVING
    if SERVING is None:
        settings = Settings.from_env()
        SERVING = ModelHolder(ModelStore(settings.model_dir, settings.model_name))
    return SERVING


def classify_batch(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ job: label, scores, top words and phrases for each review; per-review errors."""
    started = time.perf_counter()
    payload = validate_payload(payload)
    served = serving().get()  # one version answers the whole job
    top_k = int(payload.get("options", {}).get("top_words", 10))
    want_tokens = bool(payload.get("options", {}).get("token_weights", False))
    reviews = payload["reviews"]
    results = explain_reviews(served, reviews, top_k, want_tokens)
    result = {"schema": SCHEMA_VERSION, "model_version": served.version, "results": results}
    validate_result(result, payload)
    from rq import get_current_job

    job = get_current_job()
    log.info(
        "job_done",
        job_id=job.id if job else None,
        reviews=len(reviews),
        errors=sum(1 for r in results if r.get("error")),
        model_version=served.version,
        latency_ms=round(1000 * (time.perf_counter() - started), 1),
    )
    return result


def explain_reviews(
    served: Served, reviews: list[dict[str, Any]], top_k: int, want_tokens: bool = False
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in reviews]
    valid = []
    for i, review in enumerate(reviews):
        error = review_error(review.get("text"))
        if error is None:
            valid.append(i)
        else:
            results[i] = {"id": review["id"], "error": error}
    encoded = served.predictor.encode([reviews[i]["text"] for i in valid])
    explained = served.explainer.explain_ids(
        [e.ids for e in encoded], tokens=[e.tokens for e in encoded], top_k=top_k
    )
    for i, enc, exp in zip(valid, encoded, explained, strict=True):
        item: dict[str, Any] = {
            "id": reviews[i]["id"],
            "label": exp.label,
            "scores": exp.scores,
            "top_words": exp.top_words,
            "top_phrases": phrase_texts(enc.tokens, exp.phrases),
            "n_tokens": enc.n_tokens,
            "oov_count": enc.oov_count,
            "truncated": enc.truncated,
            "error": None,
        }
        if want_tokens:
            item["tokens"] = [
                [t, round(w, 4)] for t, w in zip(enc.tokens, exp.token_weights, strict=True)
            ]
        results[i] = item
    return results
