"""A loaded model version ready to serve: predictor plus explainer, and the per-review answers.

``explain_reviews`` is what a queue job, ``sentiment-predict`` and the benchmarks all call, so
every path answers a review the same way (label, scores, top words and phrases, or an error).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shared.datasets import Review
from shared.schema import DEFAULT_TOP_WORDS, MAX_REVIEWS_PER_JOB, review_error
from shared.store import ModelStore, Published, StoreError
from worker.model.explain import Explainer, phrase_texts
from worker.model.predictor import SMOKE_TEXTS, Predictor, load_predictor


@dataclass(frozen=True)
class Served:
    """One loaded model version: predictor (encoding) and explainer (scores + weights)."""

    predictor: Predictor
    explainer: Explainer

    @property
    def published(self) -> Published | None:
        return self.predictor.published

    @property
    def model_version(self) -> str:
        return self.predictor.model_version

    def info(self) -> dict[str, Any]:
        """What a worker announces about the version it serves (shown by the bot's /model)."""
        manifest = self.published.manifest if self.published else {}
        return {
            "model_version": self.model_version,
            "test_accuracy": self.published.test_accuracy if self.published else None,
            "created": manifest.get("created"),
            "architecture": manifest.get("architecture"),
        }


def load_served(store: ModelStore, version: str = "LATEST") -> Served:
    """Load and check a version, and trace its explainer, so its first job is not slow."""
    predictor = load_predictor(store.resolve(version))
    served = Served(predictor, Explainer(predictor.model))
    explained = served.explainer.explain_ids([e.ids for e in predictor.encode(list(SMOKE_TEXTS))])
    if any(not math.isfinite(e.log_odds) for e in explained):
        raise StoreError(f"{predictor.model_version}: smoke explanation is not finite")
    return served


def explain_reviews(
    served: Served, reviews: Sequence[dict[str, Any]], top_k: int, want_tokens: bool = False
) -> list[dict[str, Any]]:
    """One result per review (``{"id", "text"}``), in order: the answer or a per-review error."""
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


def classify_reviews(
    reviews: Iterable[Review], served: Served, progress: bool = True, top_k: int = DEFAULT_TOP_WORDS
) -> Iterator[dict[str, Any]]:
    """One output row per review, in order, shaped like the queue's (see ``shared.batches``).

    Rows carry the job's fields (label, scores, top words and phrases, OOV count, truncation)
    or ``error``: a read error from the file, or the queue contract's rules for the text.
    Reviews are read and answered ``MAX_REVIEWS_PER_JOB`` at a time: memory stays flat.
    """
    from tqdm import tqdm

    records = iter(reviews)
    with tqdm(desc="classify", unit=" reviews", disable=not progress) as bar:
        while chunk := list(itertools.islice(records, MAX_REVIEWS_PER_JOB)):
            rows: list[dict[str, Any]] = [
                {"id": r.id, "line": r.line, "model_version": served.model_version} for r in chunk
            ]
            readable = []
            for i, r in enumerate(chunk):
                if r.error is not None:
                    rows[i]["error"] = r.error
                else:
                    readable.append(i)
            payload = [{"id": chunk[i].id, "text": chunk[i].text} for i in readable]
            for i, result in zip(readable, explain_reviews(served, payload, top_k), strict=True):
                rows[i].update({k: v for k, v in result.items() if k != "id"})
            bar.update(len(chunk))
            yield from rows
