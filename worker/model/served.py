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
from shared.progress import progress as bar_for
from shared.schema import DEFAULT_TOP_WORDS, LABELS, MAX_REVIEWS_PER_JOB, review_error
from shared.store import ModelStore, Published, StoreError
from worker.model.explain import Explainer
from worker.model.phrases import phrase_texts
from worker.model.predictor import SMOKE_TEXTS, Predictor, load_predictor


@dataclass(frozen=True)
class Calibration:
    """Post-hoc calibration of a version (``manifest["calibration"]``, ``sentiment-calibrate``):
    positive-class log-odds ``z`` become ``z / temperature + bias`` (with a pair of its own for
    texts of at most ``short_tokens`` tokens: sentences are not reviews); an answer whose larger
    probability is under ``uncertain_below`` is flagged uncertain.  Identity by default."""

    temperature: float = 1.0
    bias: float = 0.0
    uncertain_below: float = 0.0
    short_tokens: int = 0
    short_temperature: float = 1.0
    short_bias: float = 0.0

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Calibration:
        raw = manifest.get("calibration") or {}
        short = raw.get("short") or {}
        calibration = cls(
            temperature=float(raw.get("temperature", 1.0)),
            bias=float(raw.get("bias", 0.0)),
            uncertain_below=float(raw.get("uncertain_below", 0.0)),
            short_tokens=int(short.get("max_tokens", 0)),
            short_temperature=float(short.get("temperature", 1.0)),
            short_bias=float(short.get("bias", 0.0)),
        )
        params = (calibration.temperature, calibration.short_temperature)
        biases = (calibration.bias, calibration.short_bias)
        if not (min(params) > 0 and all(math.isfinite(b) for b in biases)):
            raise StoreError(f"bad calibration in the manifest: {raw}")
        if not 0.0 <= calibration.uncertain_below < 1.0:
            raise StoreError(f"bad uncertain_below in the manifest: {raw}")
        return calibration

    def params(self, n_tokens: int) -> tuple[float, float]:
        """(temperature, bias) for a text of ``n_tokens`` tokens."""
        if n_tokens <= self.short_tokens:
            return self.short_temperature, self.short_bias
        return self.temperature, self.bias


@dataclass(frozen=True)
class Served:
    """One loaded model version: predictor (encoding) and explainer (scores + weights)."""

    predictor: Predictor
    explainer: Explainer
    calibration: Calibration = Calibration()

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
    published = store.resolve(version)
    predictor = load_predictor(published)
    served = Served(
        predictor, Explainer(predictor.model), Calibration.from_manifest(published.manifest)
    )
    explained = served.explainer.explain_ids([e.ids for e in predictor.encode(list(SMOKE_TEXTS))])
    if any(not math.isfinite(e.log_odds) for e in explained):
        raise StoreError(f"{predictor.model_version}: smoke explanation is not finite")
    return served


def explain_reviews(
    served: Served,
    reviews: Sequence[dict[str, Any]],
    top_k: int,
    want_tokens: bool = False,
) -> list[dict[str, Any]]:
    """One result per review (``{"id", "text"}``), in order: the answer or a per-review error
    (each the same whatever reviews it is batched with)."""
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
    cal = served.calibration
    for i, enc, exp in zip(valid, encoded, explained, strict=True):
        temperature, bias = cal.params(enc.n_tokens)
        z = exp.log_odds / temperature + bias
        p_pos = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        label = LABELS[int(z > 0)]
        # Weights stay the words' shares of the log-odds, oriented to the (calibrated) label.
        scale = (1.0 if label == exp.label else -1.0) / temperature
        item: dict[str, Any] = {
            "id": reviews[i]["id"],
            "label": label,
            "scores": {LABELS[0]: 1.0 - p_pos, LABELS[1]: p_pos},
            "uncertain": max(p_pos, 1.0 - p_pos) < cal.uncertain_below,
            "top_words": [[w, v * scale] for w, v in exp.top_words]
            if scale != 1.0
            else exp.top_words,
            "top_phrases": [[t, v * scale] for t, v in phrase_texts(enc.tokens, exp.phrases)]
            if scale != 1.0
            else phrase_texts(enc.tokens, exp.phrases),
            "n_tokens": enc.n_tokens,
            "oov_count": enc.oov_count,
            "truncated": enc.truncated,
            "error": None,
        }
        if want_tokens:
            item["tokens"] = [
                [t, round(w * scale, 4)] for t, w in zip(enc.tokens, exp.token_weights, strict=True)
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
    records = iter(reviews)
    with bar_for(desc="classify", unit=" reviews", disable=not progress) as bar:
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
