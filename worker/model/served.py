"""A loaded model version ready to serve: predictor plus explainer, and the per-review answers.

``explain_reviews`` is what a queue job, ``sentiment-predict`` and the benchmarks all call, so
every path answers a review the same way (label, scores, top words and phrases, or an error).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from shared.collector import paused
from shared.datasets import Review
from shared.progress import progress as bar_for
from shared.schema import DEFAULT_TOP_WORDS, LABELS, MAX_REVIEWS_PER_JOB, review_error
from shared.store import ModelStore, Published, StoreError
from shared.text import tokenize
from worker.model import SHORT_TOKENS
from worker.model.cnn import CROP_BAG_LAYER, NGRAM_BAG_LAYER
from worker.model.compose import recompose
from worker.model.explain import Explainer
from worker.model.language import ENGLISH, language_of
from worker.model.phrases import phrase_texts
from worker.model.predictor import SMOKE_TEXTS, Predictor, load_predictor
from worker.model.sentences import REASON_WORDS, Shares, Tables, ranges, split
from worker.model.sentences import answers as sentence_answers
from worker.model.targets import summary, targets_of
from worker.model.verdict import Observed, VerdictRule

_TABLES: dict[int, Tables] = {}
#: Top words a sentence carries at most (a review carries the job's ``top_words``).
SENTENCE_TOP_WORDS = 3


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
    rule: VerdictRule = VerdictRule()  # noqa: RUF009 (frozen, shared safely)
    #: Short texts with negators, contrast words or ratings composed (``worker.model.compose``).
    composed: bool = True

    @property
    def published(self) -> Published | None:
        return self.predictor.published

    def polarity(self) -> dict[str, float]:
        """Each word's weight alone in the short-text bag (else the review bag): how the model
        reads it out of context (``worker.model.compose`` finds opinion words by it)."""
        return self._polarity

    @cached_property
    def _polarity(self) -> dict[str, float]:  # built once per loaded version, freed with it
        model = self.predictor.model
        names = {layer.name for layer in model.layers}
        bag = next((n for n in (CROP_BAG_LAYER, NGRAM_BAG_LAYER) if n in names), None)
        table = model.get_layer(bag).get_weights()[0] if bag else []
        return {w: float(x) for w, x in zip(self.predictor.vocab.tokens, table, strict=False)}

    def tables(self) -> Tables:
        """The vocabulary's lookups for sentence answers (built at the first use)."""
        built = _TABLES.get(id(self.predictor.vocab))
        if built is None:
            built = _TABLES[id(self.predictor.vocab)] = Tables(self.predictor.vocab.tokens)
        return built

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
        predictor,
        Explainer(predictor.model),
        Calibration.from_manifest(published.manifest),
        VerdictRule.from_manifest(published.manifest),
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
    sentences: bool = False,
    observe: bool = False,
) -> list[dict[str, Any]]:
    """One result per review (``{"id", "text"}``), in order: the answer or a per-review error
    (each the same whatever reviews it is batched with).

    Every answer carries its ``verdict``, readable ``reasons`` and ``language`` (a review not
    in English is ``uncertain``, its sentences too: ``worker.model.language``); with
    ``sentences``, also its
    sentences: character spans of the text as sent, each answered with its share of the
    review's log-odds from the same pass (``worker.model.sentences``).  The verdict reads the
    sentences whether or not they are asked for: only what is shown differs.

    The cyclic garbage collector is paused meanwhile (``shared.collector``): answers are trees
    of dicts and lists, and collections were a fifth of the time of a job answered per
    sentence."""
    with paused():
        return _explain_reviews(served, reviews, top_k, want_tokens, sentences, observe)


def _explain_reviews(
    served: Served,
    reviews: Sequence[dict[str, Any]],
    top_k: int,
    want_tokens: bool,
    sentences: bool,
    observe: bool,
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in reviews]
    valid = []
    for i, review in enumerate(reviews):
        error = review_error(review.get("text"))
        if error is None:
            valid.append(i)
        else:
            results[i] = {"id": review["id"], "error": error}
    texts = [reviews[i]["text"] for i in valid]
    predictor, rule, cal = served.predictor, served.rule, served.calibration
    # Sentences are always found: the verdict reads them (a review is mixed or not whatever
    # the caller wants to see); their answers are built only when asked for.
    splits = [split(t) for t in texts]
    tokens: list[list[str]] = []
    for k, text in enumerate(texts):
        aligned = splits[k].tokens
        tokens.append(aligned if aligned is not None else tokenize(text))
    encoded = [
        predictor.vocab.encode(t, predictor.max_len, predictor.head_fraction) for t in tokens
    ]
    # Sentences of a review whose tokens could not be aligned with them (rare): their own pass.
    alone = [
        (k, s, e)
        for k, sp in enumerate(splits)
        if sp.tokens is None and len(sp.spans) > 1
        for s, e in sp.spans
    ]
    encoded += predictor.encode([texts[k][s:e] for k, s, e in alone])
    explained = served.explainer.explain_ids(
        [e.ids for e in encoded],
        tokens=[e.tokens for e in encoded],
        top_k=max(top_k, REASON_WORDS),  # reasons are read from more words than are shown
    )
    composed: set[int] = set()
    if served.composed:  # negation, contrast and ratings in short texts (worker.model.compose)
        top = max(top_k, REASON_WORDS)
        composed = recompose(texts, encoded, explained, top, served.polarity())
    answers = [_answer(cal, enc, exp) for enc, exp in zip(encoded, explained, strict=True)]
    # Each text's sentences as results carry them, and what the verdict reads of each.
    per_text: list[list[dict[str, Any]]] = [[] for _ in texts]
    seen_of: list[list[tuple[float, float]]] = [[] for _ in texts]
    z_of: list[list[float | None]] = [[] for _ in texts]

    def answered_alone(k: int, start: int, end: int, answer: dict[str, Any], enc: Any) -> None:
        per_text[k].append(_brief(answer, enc.tokens, start, end, rule, top_k))
        seen_of[k].append((answer["scores"][LABELS[1]], answer["_evidence"]))
        z_of[k].append(answer["_z"])

    for (k, s, e), answer, enc in zip(
        alone, answers[len(texts) :], encoded[len(texts) :], strict=True
    ):
        answered_alone(k, s, e, answer, enc)
    shared_out: list[tuple[int, Shares]] = []
    for k, sp in enumerate(splits):
        enc, exp = encoded[k], explained[k]
        if len(sp.spans) == 1:  # one sentence: the text's own answer
            answered_alone(k, *sp.spans[0], answers[k], enc)
        elif sp.tokens is not None:
            bounds = ranges(sp.counts, enc.n_tokens, predictor.max_len, predictor.head_fraction)
            toward = 1.0 if exp.label == LABELS[1] else -1.0
            shared_out.append(
                (k, Shares(enc.tokens, enc.ids, exp.token_weights, toward, bounds, sp.spans))
            )
    settings = (
        rule.sentence_calibration,
        cal.uncertain_below,
        rule.min_share,
        min(top_k, SENTENCE_TOP_WORDS),
    )
    shares = sentence_answers(
        [s for _, s in shared_out], served.tables(), settings, build=sentences
    )
    for (k, share), parts in zip(shared_out, shares, strict=True):
        per_text[k], seen_of[k] = parts.sentences, parts.seen
        z_of[k] = [z if b > a else None for z, (a, b) in zip(parts.z, share.bounds, strict=True)]
    seen = [observed(answers[k], encoded[k].n_tokens, seen_of[k]) for k in range(len(texts))]
    verdicts = rule.verdicts(seen)
    for k, i in enumerate(valid):
        answer, enc, verdict = answers[k], encoded[k], verdicts[k]
        if verdict in LABELS and verdict != answer["label"]:  # a verdict never contradicts
            verdict = "mixed"  # the label: evidence both ways (a long review, its middle unread)
        if verdict == "neutral" and k in composed and not answer["uncertain"]:
            verdict = answer["label"]  # an opinion reversed, denied, rated or contrasted
        elif verdict in LABELS and answer["uncertain"] and enc.n_tokens <= SHORT_TOKENS:
            verdict = "neutral"  # a short text the model is unsure of states no clear side
        item: dict[str, Any] = {
            "id": reviews[i]["id"],
            **{key: v for key, v in answer.items() if not key.startswith("_")},
            "top_words": answer["top_words"][:top_k],
            "top_phrases": answer["top_phrases"][:top_k],
            "verdict": verdict,
            "reasons": rule.reasons(answer["top_words"]),
            "against": rule.reasons(answer["top_words"], against=True),
            "n_tokens": enc.n_tokens,
            "oov_count": enc.oov_count,
            "truncated": enc.truncated,
            "language": language_of(texts[k], len(enc.ids), enc.oov_count),
            "error": None,
        }
        if item["language"] != ENGLISH:  # the model reads English: its label is no answer
            item["uncertain"] = True
            for part in per_text[k]:
                part["uncertain"] = True
        if sentences:
            item["sentences"] = per_text[k]
            item["about"] = summary(per_text[k], verdict)
        if observe:
            item["observed"] = seen[k]
            item["sentence_log_odds"] = z_of[k]
        if want_tokens:
            scale = answer["_scale"]
            item["tokens"] = [
                [t, round(w * scale, 4)]
                for t, w in zip(enc.tokens, explained[k].token_weights, strict=True)
            ]
        results[i] = item
    return results


def observed(answer: dict[str, Any], n_tokens: int, parts: list[tuple[float, float]]) -> Observed:
    """What the verdict reads of an answer and its sentences' (probability, evidence)."""
    own = (answer["scores"][LABELS[1]], answer["_evidence"])
    return Observed(own[0], own[1], n_tokens, parts or [own])


def _answer(cal: Calibration, enc: Any, exp: Any) -> dict[str, Any]:
    """Label, calibrated scores, uncertainty, top words and phrases of one encoded text."""
    temperature, bias = cal.params(enc.n_tokens)
    z = exp.log_odds / temperature + bias
    p_pos = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
    label = LABELS[int(z > 0)]
    # Weights stay the words' shares of the log-odds, oriented to the (calibrated) label.
    scale = (1.0 if label == exp.label else -1.0) / temperature
    phrases = phrase_texts(enc.tokens, exp.phrases)
    return {
        "label": label,
        "scores": {LABELS[0]: 1.0 - p_pos, LABELS[1]: p_pos},
        "uncertain": max(p_pos, 1.0 - p_pos) < cal.uncertain_below,
        "top_words": [[w, v * scale] for w, v in exp.top_words] if scale != 1.0 else exp.top_words,
        "top_phrases": [[t, v * scale] for t, v in phrases] if scale != 1.0 else phrases,
        "_scale": scale,
        "_z": exp.log_odds,
        # The strongest token weight for the label: how much evidence the answer rests on.
        "_evidence": _strongest(exp.token_weights, scale),
    }


def _strongest(weights: Sequence[float], scale: float) -> float:
    """The largest of ``weights * scale`` (0 if none is positive)."""
    if not weights:
        return 0.0
    return max(0.0, scale * (max(weights) if scale > 0 else min(weights)))


def _brief(
    answer: dict[str, Any],
    tokens: Sequence[str],
    start: int,
    end: int,
    rule: VerdictRule,
    top_k: int,
) -> dict[str, Any]:
    """A sentence answered on its own pass (or a text's only sentence): its part of a result."""
    reasons = rule.reasons(answer["top_words"])
    return {
        "start": start,
        "end": end,
        "label": answer["label"],
        "scores": answer["scores"],
        "uncertain": answer["uncertain"],
        "read": True,
        "top_words": answer["top_words"][:top_k],
        "reasons": reasons,
        "targets": targets_of(tokens, reasons),
    }


def classify_reviews(
    reviews: Iterable[Review],
    served: Served,
    progress: bool = True,
    top_k: int = DEFAULT_TOP_WORDS,
    sentences: bool = False,
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
            for i, result in zip(
                readable, explain_reviews(served, payload, top_k, sentences=sentences), strict=True
            ):
                rows[i].update({k: v for k, v in result.items() if k != "id"})
            bar.update(len(chunk))
            yield from rows
