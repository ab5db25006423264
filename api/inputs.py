"""What a request carries: reviews from a form or JSON body, upload names, highlights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile as StarletteUpload

from api.errors import ApiError
from shared.highlight import word_spans
from shared.schema import MAX_ID_CHARS, MAX_REVIEWS_PER_JOB, MAX_TOP_WORDS, is_unicode

#: Highlight spans one review's answer carries at most (the strongest are kept) ...
MAX_HIGHLIGHTS = 1000
#: ... and one request's answer in all (shared out among its reviews, at least 50 each).
MAX_HIGHLIGHTS_PER_REQUEST = 50_000

#: Upload names keep their format suffix (the producer picks the reader by it).
SUFFIXES = (".tar.gz", ".tgz", ".csv", ".jsonl", ".ndjson", ".txt", ".tsv")

#: What FastAPI (pydantic) takes for a boolean query parameter, in any case.
_TRUE, _FALSE = {"1", "t", "true", "y", "yes", "on"}, {"0", "f", "false", "n", "no", "off"}


def _query_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


#: The query of POST /v1/classify, for the OpenAPI schema (``classify_options`` reads it: a
#: chat-sized request is what the API serves most, and FastAPI's parameter solving was a
#: tenth of such a request's CPU, issue 25's profile).
CLASSIFY_QUERY: list[dict[str, Any]] = [
    _query_parameter(
        "top_words",
        {"type": "integer", "minimum": 0, "maximum": MAX_TOP_WORDS},
        "top contributing words per review (default: the server's API_TOP_WORDS)",
    ),
    _query_parameter("tokens", {"type": "boolean", "default": False}, "per-token weights too"),
    _query_parameter(
        "sentences",
        {"type": "boolean", "default": True},
        "per-sentence answers (false skips them)",
    ),
]


def _flag(query: Any, name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ApiError(422, f"query.{name}: Input should be a valid boolean")


def classify_options(query: Any, default_top_words: int) -> tuple[int, bool, bool]:
    """``top_words``, ``tokens`` and ``sentences`` of a classify request's query (as
    ``CLASSIFY_QUERY`` documents them); 422 when one is malformed."""
    raw = query.get("top_words")
    top_words = default_top_words
    if raw is not None:
        try:  # as pydantic: "5" and "5.0", not "5.5" nor digits of other scripts
            number = float(raw) if raw.isascii() else float("nan")
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            raise ApiError(422, "query.top_words: Input should be a valid integer")
        top_words = int(number)
        if not 0 <= top_words <= MAX_TOP_WORDS:
            raise ApiError(422, f"query.top_words: Input should be 0-{MAX_TOP_WORDS}")
    return top_words, _flag(query, "tokens", False), _flag(query, "sentences", True)


#: The request body of POST /v1/classify, for the OpenAPI schema (the route reads the body
#: itself: a form field or JSON).
CLASSIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"review": {"type": "string"}},
                    "required": ["review"],
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {"review": {"type": "string"}},
                            "required": ["review"],
                        },
                        {
                            "type": "object",
                            "properties": {
                                "reviews": {
                                    "type": "array",
                                    "maxItems": MAX_REVIEWS_PER_JOB,
                                    "items": {
                                        "oneOf": [
                                            {"type": "string"},
                                            {
                                                "type": "object",
                                                "properties": {
                                                    "id": {"type": "string"},
                                                    "text": {"type": "string"},
                                                },
                                                "required": ["text"],
                                            },
                                        ]
                                    },
                                }
                            },
                            "required": ["reviews"],
                        },
                    ]
                }
            },
        },
        "required": True,
    }
}


async def read_reviews_from(request: Request) -> tuple[list[tuple[str, Any]], bool]:
    """(id, text) pairs from a form or JSON body, and whether it was a single review."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=16)
        except UnicodeDecodeError as exc:
            raise ApiError(400, "the form is not valid UTF-8") from exc
        value = form.get("review")
        if value is None:
            raise ApiError(422, "missing form field 'review' (curl -F review='...')")
        if isinstance(value, StarletteUpload):  # curl -F review=@file.txt
            raw = await value.read()
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, "the review is not valid UTF-8 text") from exc
        return [("1", value)], True
    if kind == "application/json":
        raw = await request.body()
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ApiError(400, "the body is not valid UTF-8") from exc
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # "[[[[...": nested deeper than Python's stack
            raise ApiError(400, "the body's JSON is nested too deeply") from exc
        return reviews_from_json(body)
    raise ApiError(
        415,
        "send the review as a form field (multipart/form-data or urlencoded: review=...) "
        'or as JSON ({"review": ...} or {"reviews": [...]})',
    )


def upload_name(filename: str | None) -> str:
    """The uploaded file's own name (review ids are ``name:line``, as for the producer), made
    safe for a path: no folders, no odd characters, at most 100 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "upload.txt").name).lstrip(".")
    name = name[-100:] or "upload.txt"
    if not name.lower().endswith(SUFFIXES):
        name += ".txt"
    return name


def reviews_from_json(body: Any) -> tuple[list[tuple[str, Any]], bool]:
    """(id, text) pairs from ``{"review": ...}`` or ``{"reviews": [text or {id, text}, ...]}``."""
    if not isinstance(body, dict) or ("review" in body) == ("reviews" in body):
        raise ApiError(422, 'the JSON body needs exactly one of "review" or "reviews"')
    if "review" in body:
        if not isinstance(body["review"], str):
            raise ApiError(422, '"review" must be a string')
        return [("1", body["review"])], True
    reviews = body["reviews"]
    if not isinstance(reviews, list) or not reviews:
        raise ApiError(422, '"reviews" must be a non-empty list')
    if len(reviews) > MAX_REVIEWS_PER_JOB:
        raise ApiError(
            413,
            f"at most {MAX_REVIEWS_PER_JOB} reviews per request (got {len(reviews)}); "
            "upload a file to /v1/batches for more",
        )
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(reviews):
        rid, text = (
            (item.get("id", str(i + 1)), item.get("text"))
            if isinstance(item, dict)
            else (
                str(i + 1),
                item,
            )
        )
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS or not is_unicode(rid):
            raise ApiError(422, f"reviews[{i}].id must be a string of 1-{MAX_ID_CHARS} characters")
        if rid in seen:
            raise ApiError(422, f"reviews[{i}].id {rid!r} repeats an earlier id")
        seen.add(rid)
        out.append((rid, text))  # a text that is not a string gets its own per-review error
    return out, False


def highlight_limit(reviews: int) -> int:
    """Spans per review for a request of ``reviews`` reviews."""
    return min(MAX_HIGHLIGHTS, max(50, MAX_HIGHLIGHTS_PER_REQUEST // max(1, reviews)))


def with_highlights(text: str, item: dict[str, Any], limit: int = MAX_HIGHLIGHTS) -> dict[str, Any]:
    """The worker's result plus ``highlights``: spans of the review's own text, each with its
    word's weight toward *positive* (the worker's weights lean toward its label).  At most
    ``limit`` spans, the strongest, in text order (``highlights_truncated`` says when more were
    found)."""
    if item.get("error"):
        return item
    sign = 1.0 if item["label"] == "positive" else -1.0
    pairs = item.get("tokens") or item.get("top_words") or []
    sums: dict[str, list[float]] = {}
    for token, weight in pairs:
        sums.setdefault(str(token), []).append(float(weight))
    weights = {t: sign * sum(ws) / len(ws) for t, ws in sums.items()}
    spans = word_spans(text, weights)
    cut = len(spans) > limit
    if cut:
        strongest = sorted(spans, key=lambda s: -abs(s.weight))[:limit]
        spans = sorted(strongest, key=lambda s: s.start)
    out = {**item, "highlights": [[s.start, s.end, round(s.weight, 4)] for s in spans]}
    if cut:
        out["highlights_truncated"] = True
    return out


class FeedbackBody(BaseModel):
    """POST /v1/feedback: which label is right for ``text``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the review text the feedback is about")
    label: Literal["negative", "positive"] = Field(description="the label that is right")
    predicted: Literal["negative", "positive"] | None = Field(
        None, description="the label the model gave, if known"
    )
    model_version: str | None = Field(None, max_length=200)
    message_id: str | None = Field(
        None,
        max_length=120,
        description="your id for the answer rated (default: a hash of the text); a later vote "
        "with the same id from the same voter replaces the earlier",
    )
    user: str | None = Field(
        None,
        max_length=120,
        description="your end user's id, stored as a pseudonym: only from a token declared a "
        "trusted feedback source (API_FEEDBACK_TRUSTED); other tokens vote as themselves",
    )
