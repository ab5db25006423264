"""The queue contract: job function path, payload and result schema, validated at both ends.

A job is ``JOB_FUNCTION(payload)`` serialized with RQ's JSON serializer, so producers never import
the worker or TensorFlow and nothing is unpickled.  Payload::

    {"schema": 2, "reviews": [{"id": "r1", "text": "..."}],
     "options": {"top_words": 10, "model_version": "sentiment-cnn/v0003"}}

``options.model_version`` (optional) names the version that served when the job was made; the
worker answers with the version it serves and says which in the result.

Result::

    {"schema": 3, "model_version": "sentiment-cnn/v0003", "results": [
        {"id": "r1", "label": "positive", "scores": {"negative": 0.1, "positive": 0.9},
         "uncertain": false,
         "top_words": [["superb", 1.7], ["boring", -0.4]],
         "top_phrases": [["not bad at all", 1.2]],
         "verdict": "positive", "reasons": ["superb"], "against": ["boring"],
         "sentences": [{"start": 0, "end": 31, "label": "positive", "scores": {...},
                        "uncertain": false, "top_words": [...], "reasons": ["superb"],
                        "targets": ["acting"]}],
         "about": {"positive": ["acting"], "negative": []},
         "n_tokens": 57, "oov_count": 1, "truncated": false, "language": "en", "error": null},
        {"id": "r2", "error": "empty review"}]}

Weights are in log-odds units of the predicted label: positive supports it, negative opposes it;
``top_words`` is sorted by absolute weight.  ``scores`` are calibrated probabilities when the
version carries a calibration; ``uncertain`` is true when the larger score is under the version's
threshold (the label is then only a leaning).  Schema 2 added ``uncertain``.  Schema 3 added
``verdict`` (positive, negative, mixed or neutral: ``worker.model.verdict``; ``label`` keeps its
binary meaning), ``reasons`` and ``against`` (the top words a reader is shown: those with a
meaningful share of the evidence for and against the label) and, when the payload's
``options.sentences`` is true, ``sentences``: character spans ``[start, end)`` of the text as
sent, each answered like a text, with its ``targets`` (what its opinion is about:
``worker.model.targets``), and ``about``, the review's targets by side.  ``language`` (ISO
639-1, optional: absent means English) is the review's language; the model reads English, so a
review in another language is ``uncertain`` (``worker.model.language``).  A worker answers in
its payload's schema (a schema-2 payload gets a schema-2 result, the new fields extra), and
producers read results of schema 1 to 3, so a rolling upgrade loses nothing.  An invalid
review gets a per-review ``error``; it never fails the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

SCHEMA_VERSION = 3
#: Versions still understood: payloads from older producers, results from older workers.
SUPPORTED_SCHEMAS = (1, 2, 3)
#: The job function's dotted path: a contract stored in Redis with every job.
JOB_FUNCTION = "worker.jobs.classify_batch"
LABELS = ("negative", "positive")
VERDICTS = ("positive", "negative", "mixed", "neutral")
#: Longest review accepted, in characters (far beyond the longest IMDB review).  The model reads at
#: most the sequence length of tokens (head and tail); longer input only costs tokenizing.
MAX_REVIEW_CHARS = 100_000
MAX_REVIEWS_PER_JOB = 1024
MAX_ID_CHARS = 512
DEFAULT_TOP_WORDS = 10
MAX_TOP_WORDS = 100


class SchemaError(ValueError):
    """A payload or result does not follow the contract."""


def review_error(text: object) -> str | None:
    """Why a review text cannot be classified, or None (shared by producer, worker and bot)."""
    if not isinstance(text, str):
        return f"review text must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty review"
    if len(text) > MAX_REVIEW_CHARS:
        return f"review longer than {MAX_REVIEW_CHARS:,} characters"
    if "\x00" in text:
        return "review contains NUL bytes"
    if not is_unicode(text):
        return "review is not valid Unicode text (it holds a lone surrogate)"
    return None


def is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (JSON lets a client send a lone surrogate, "\\ud800",
    which no UTF-8 writer, Redis client or JSON encoder downstream accepts)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_payload(
    reviews: Sequence[tuple[str, str]],
    top_words: int = DEFAULT_TOP_WORDS,
    model_version: str = "",
    sentences: bool = False,
) -> dict[str, Any]:
    """A validated job payload for ``(id, text)`` pairs (SchemaError if it breaks the contract).

    ``model_version`` is the version serving when the job is made (``shared.queues``): part of
    the payload, hence of the job id, so an answer is reused only while that version serves."""
    options: dict[str, Any] = {"top_words": top_words}
    if model_version:
        options["model_version"] = model_version
    if sentences:
        options["sentences"] = True
    payload = {
        "schema": SCHEMA_VERSION,
        "reviews": [{"id": rid, "text": text} for rid, text in reviews],
        "options": options,
    }
    validate_payload(payload)
    return payload


def validate_payload(payload: object) -> dict[str, Any]:
    """Check the envelope; individual bad review *texts* are reported per review, not here."""
    if not isinstance(payload, Mapping):
        raise SchemaError("payload must be an object")
    if payload.get("schema") not in SUPPORTED_SCHEMAS:
        raise SchemaError(f"unsupported payload schema {payload.get('schema')!r}")
    reviews = payload.get("reviews")
    if not isinstance(reviews, list) or not reviews:
        raise SchemaError("'reviews' must be a non-empty list")
    if len(reviews) > MAX_REVIEWS_PER_JOB:
        raise SchemaError(f"at most {MAX_REVIEWS_PER_JOB} reviews per job, got {len(reviews)}")
    for i, review in enumerate(reviews):
        if not isinstance(review, Mapping) or "text" not in review:
            raise SchemaError(f"review {i} must be an object with 'id' and 'text'")
        rid = review.get("id")
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS or not is_unicode(rid):
            raise SchemaError(f"review {i} needs a string 'id' of 1-{MAX_ID_CHARS} characters")
    options = payload.get("options", {})
    if not isinstance(options, Mapping):
        raise SchemaError("'options' must be an object")
    token_weights = options.get("token_weights", False)
    if not isinstance(token_weights, bool):
        raise SchemaError("'token_weights' must be true or false")
    if not isinstance(options.get("sentences", False), bool):
        raise SchemaError("'sentences' must be true or false")
    version = options.get("model_version", "")
    if not isinstance(version, str) or len(version) > 200:
        raise SchemaError("'model_version' must be a string of at most 200 characters")
    top = options.get("top_words", DEFAULT_TOP_WORDS)
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_WORDS:
        raise SchemaError(f"'top_words' must be an integer in 0..{MAX_TOP_WORDS}")
    return {**payload, "options": {**options, "top_words": top, "token_weights": token_weights}}


def answer_options(payload: Mapping[str, Any]) -> tuple[int, bool, bool, int]:
    """A validated payload's (top_words, token_weights, sentences, result schema)."""
    options = payload.get("options", {})
    return (
        int(options["top_words"]),
        bool(options.get("token_weights", False)),
        bool(options.get("sentences", False)),
        max(2, min(int(payload["schema"]), SCHEMA_VERSION)),
    )


def _check_pairs(value: object, what: str) -> None:
    """``value`` is a list of [text, finite number] pairs (``type`` checks: these run for every
    sentence of every answer, at both ends)."""
    if type(value) is not list:
        raise SchemaError(f"'{what}' must be a list of [text, finite number] pairs")
    # The usual case, in loops that run in C: [str, float] lists whose floats are all finite.
    if set(map(type, value)) <= _LIST and set(map(len, value)) <= _TWO:
        try:
            if (
                set(map(type, map(_first, value))) <= _STR
                and set(map(type, map(_second, value))) <= _FLOAT
                and -_HUGE < math.fsum(map(_second, value)) < _HUGE
            ):
                return
        except (OverflowError, ValueError):  # inf - inf, or finite numbers whose sum overflows
            pass
    for p in value:
        kind = type(p)
        if (kind is not list and kind is not tuple) or len(p) != 2 or type(p[0]) is not str:
            raise SchemaError(f"'{what}' must be a list of [text, finite number] pairs")
        number, kind = p[1], type(p[1])
        if (
            kind is not float
            and kind is not int
            and (not isinstance(number, (int, float)) or isinstance(number, bool))
        ):
            raise SchemaError(f"'{what}' must be a list of [text, finite number] pairs")
        if not -_HUGE < number < _HUGE:  # rejects inf, -inf and nan
            raise SchemaError(f"'{what}' must be a list of [text, finite number] pairs")


_HUGE = float("inf")
_LABEL_SET = frozenset(LABELS)
_STR = frozenset((str,))
_FLOAT = frozenset((float,))
_LIST = frozenset((list,))
_TWO = frozenset((2,))
_first, _second = itemgetter(0), itemgetter(1)


def validate_result(result: object, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a worker's answer (and, given the payload, that it answers every review in order)."""
    if not isinstance(result, Mapping) or result.get("schema") not in SUPPORTED_SCHEMAS:
        raise SchemaError("result must be an object with a supported schema version")
    if not isinstance(result.get("model_version"), str):
        raise SchemaError("result lacks 'model_version'")
    items = result.get("results")
    if not isinstance(items, list):
        raise SchemaError("'results' must be a list")
    if payload is not None and [r.get("id") for r in items if isinstance(r, Mapping)] != [
        r["id"] for r in payload["reviews"]
    ]:
        raise SchemaError("results do not answer the payload's reviews in order")
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            raise SchemaError("every result needs an 'id'")
        if item.get("error") is not None:
            if not isinstance(item["error"], str):
                raise SchemaError("'error' must be a string")
            continue
        if item.get("label") not in LABELS:
            raise SchemaError(f"bad label {item.get('label')!r}")
        scores = item.get("scores")
        if not isinstance(scores, Mapping) or set(scores) != set(LABELS):
            raise SchemaError("'scores' must hold both classes")
        if not _probabilities(scores.values()):
            raise SchemaError("'scores' must be probabilities summing to 1")
        if result["schema"] >= 2 and not isinstance(item.get("uncertain"), bool):
            raise SchemaError("'uncertain' must be true or false")
        _check_pairs(item.get("top_words"), "top_words")
        _check_pairs(item.get("top_phrases"), "top_phrases")
        if result["schema"] >= 3:
            _check_schema3(item)
    if payload is not None:
        asked = bool(payload.get("options", {}).get("sentences")) and result["schema"] >= 3
        for item, review in zip(items, payload["reviews"], strict=True):
            spans = item.get("sentences") or []
            if spans and spans[-1]["end"] > len(review["text"]):
                raise SchemaError("a sentence ends past its review's text")
            if asked and item.get("error") is None and not spans:
                raise SchemaError("sentences were asked for and not given")
    return dict(result)


def _check_schema3(item: Mapping[str, Any]) -> None:
    if item.get("verdict") not in VERDICTS:
        raise SchemaError(f"bad verdict {item.get('verdict')!r}")
    language = item.get("language", "en")  # workers before it: English, as they assumed
    if type(language) is not str or not (2 <= len(language) <= 3 and language.isalpha()):
        raise SchemaError("'language' must be a language code such as 'en'")
    _check_words(item.get("reasons"))
    _check_words(item.get("against", []))
    sentences = item.get("sentences", [])
    if not isinstance(sentences, list):
        raise SchemaError("'sentences' must be a list")
    end = 0
    pairs: list[Any] = []  # every sentence's top words, checked at once
    words: list[Any] = []  # and their reasons and targets
    for s in sentences:
        try:
            start, stop, label, scores, unsure, top, reasons = (
                s["start"],
                s["end"],
                s["label"],
                s["scores"],
                s["uncertain"],
                s["top_words"],
                s["reasons"],
            )
            targets = s.get("targets", [])
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise SchemaError(
                "every sentence needs start, end, label, scores, uncertain, top_words, reasons"
            ) from exc
        if type(start) is not int or type(stop) is not int or not end <= start < stop:
            raise SchemaError("sentence spans must be increasing [start, end) offsets")
        end = stop
        if label not in _LABEL_SET:
            raise SchemaError("every sentence needs a label")
        if type(scores) is not dict or scores.keys() != _LABEL_SET:
            raise SchemaError("a sentence's 'scores' must hold both classes")
        if not _probabilities(scores.values()):
            raise SchemaError("a sentence's 'scores' must be probabilities summing to 1")
        if type(unsure) is not bool or type(s.get("read", True)) is not bool:
            raise SchemaError("a sentence's 'uncertain' and 'read' must be true or false")
        if type(top) is not list:
            raise SchemaError("'top_words' must be a list of [text, finite number] pairs")
        if type(reasons) is not list or type(targets) is not list:
            raise SchemaError("'reasons' and 'targets' must be lists of words")
        pairs += top
        words += reasons
        words += targets
    _check_pairs(pairs, "top_words")
    _check_words(words)
    about = item.get("about", {})
    if not isinstance(about, Mapping) or not set(about) <= set(LABELS):
        raise SchemaError("'about' must map labels to target words")
    for words in about.values():
        _check_words(words)


def _probabilities(values: Any) -> bool:
    """Whether ``values`` are finite numbers in [0, 1] summing to 1 (within rounding)."""
    total = 0.0
    for v in values:  # runs for every sentence, at both ends: one plain loop
        if (type(v) is not float and type(v) is not int) or not 0.0 <= v <= 1.0:
            return False  # NaN fails the range too
        total += v
    return abs(total - 1.0) <= 1e-3


def _check_words(value: object) -> None:
    if type(value) is not list or not set(map(type, value)) <= _STR:
        raise SchemaError("'reasons' and 'targets' must be lists of words")
