"""Sentences of a review as character spans of the text as sent (what per-sentence answers cite).

``sentence_spans(text)`` returns ``[(start, end), ...]``: ``text[start:end]`` is a sentence with
its surrounding white space and line-break markup left out.  The boundaries inside a paragraph
come from **sentencex** (Wikimedia's segmenter: abbreviations such as "Dr." and "e.g.", decimals
and ratings such as "7.5/10", "...", "!!!", "?!"; a compiled wheel, about 0.05 ms a review; its
per-language abbreviation lists are in the wheel, nothing is downloaded).  Before it, the text
is cut at what reviews use as paragraph breaks and sentencex does not: ``<br />`` tags and line
breaks.  A piece without a single token (a lone ":)" or "...") joins the sentence before it, so
every sentence is something the model can read.

A review longer than ``MAX_SENTENCES`` sentences keeps its first ``MAX_SENTENCES - 1`` and a last
span running to the end of the text: answers stay bounded and still cover every character.
The training data's sentence crops (``worker.training.sentences``) keep their own, older regex
split: it is part of the recipe the shipped versions were trained with.
"""

from __future__ import annotations

import re

from shared.text import tokenize

#: Most sentences one review is answered in (the rest of a longer review is the last span).
MAX_SENTENCES = 64
#: Paragraph breaks reviews carry: HTML line breaks and paragraph tags, and new lines.
_BREAKS = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*>|\r?\n", re.IGNORECASE)
#: An emoticon or emoji followed by a capitalised word ends a sentence ("Great :) The end").
_EMOTICON_END = re.compile(
    r"(?:[:;=8xX][-o^']?[()\[\]dDpP/|@*3]+|[\U0001F300-\U0001FAFF\u2600-\u27BF]+)(?=\s+[A-Z])"
)
_EDGE_TAGS = re.compile(
    r"^(?:\s|<\s*br\s*/?\s*>|<\s*/?\s*p\s*>)+|(?:\s|<\s*br\s*/?\s*>|<\s*/?\s*p\s*>)+$",
    re.IGNORECASE,
)


def sentence_spans(text: str, limit: int = MAX_SENTENCES) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, in order (see module)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for brk in (*_BREAKS.finditer(text), None):
        end = brk.start() if brk is not None else len(text)
        if end > start:
            spans.extend(_paragraph(text, start, end))
        if brk is not None:
            start = brk.end()
    spans = _merge_tokenless(text, spans)
    if len(spans) > limit:
        spans = [*spans[: limit - 1], (spans[limit - 1][0], spans[-1][1])]
    return spans


def _paragraph(text: str, start: int, end: int) -> list[tuple[int, int]]:
    import sentencex

    piece = text[start:end]
    if not piece.strip():
        return []
    out = []
    for bound in sentencex.get_sentence_boundaries("en", piece):
        s, e = start + int(bound["start_index"]), start + int(bound["end_index"])
        cuts = [m.end() for m in _EMOTICON_END.finditer(text, s, e)]
        for a, b in zip([s, *cuts], [*cuts, e], strict=True):
            span = _trim(text, a, b)
            if span is not None:
                out.append(span)
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span without white space or break tags at its edges (None if nothing is left)."""
    inner = text[start:end]
    lead = _EDGE_TAGS.match(inner)
    skip = lead.end() if lead else 0
    tail = _EDGE_TAGS.search(inner, skip)
    stop = tail.start() if tail else len(inner)
    if stop <= skip:
        return None
    return start + skip, start + stop


def _merge_tokenless(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join spans without a token to their neighbour (the one before, else the one after)."""
    out: list[tuple[int, int]] = []
    pending_start: int | None = None
    for s, e in spans:
        if tokenize(text[s:e]):
            out.append((pending_start if pending_start is not None else s, e))
            pending_start = None
        elif out:
            out[-1] = (out[-1][0], e)
        elif pending_start is None:
            pending_start = s
    if pending_start is not None:  # nothing readable at all: one span over the lot
        return [(pending_start, spans[-1][1])]
    return out
