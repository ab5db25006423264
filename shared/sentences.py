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
_BREAKS = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*>|\r\n?|\n", re.IGNORECASE)
_TAG_BREAKS = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*>", re.IGNORECASE)
#: An emoticon or emoji followed by a capitalised word ends a sentence ("Great :) The end").
#: Eyes: ":", ";" or "=" anywhere ("great:)"), "8", "x" or "X" only where no letter or digit
#: comes before them (else "expect" or "18)" would hold one).
_EYES = r"[:;=8xX](?<![^\W_][8xX])[-o^']?[()\[\]dDpP/|@*3]"
#: Emoji (with their variation selectors and joiners), stars, and "…", which sentencex does not
#: take for an end.
_PICTURES = "\U0001f300-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\u2026"
_EMOTICON = re.compile(rf"(?:{_EYES}[()\[\]dDpP/|@*3]*|[{_PICTURES}]+)$")
_ANY_EYES = re.compile(_EYES)
_ANY_EMOJI = re.compile(rf"[{_PICTURES}]")
#: Where a capitalised word follows white space: the only places an emoticon can end a sentence.
_CAPITAL_AFTER_SPACE = re.compile(r"\s+(?=[A-Z])")
_EDGE_TAGS = re.compile(
    r"^(?:\s|<\s*br\s*/?\s*>|<\s*/?\s*p\s*>)+|(?:\s|<\s*br\s*/?\s*>|<\s*/?\s*p\s*>)+$",
    re.IGNORECASE,
)


def sentence_spans(text: str, limit: int = MAX_SENTENCES) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, in order (see module)."""
    spans: list[tuple[int, int]] = []
    if "\n" not in text and "\r" not in text:
        # Break tags become blank lines of their own length: one sentencex call for the text
        # (it ends a sentence at a blank line), offsets unchanged.
        spans = _paragraph(_TAG_BREAKS.sub(_as_blank_lines, text), text, 0, len(text))
    else:
        start = 0
        for brk in (*_BREAKS.finditer(text), None):
            end = brk.start() if brk is not None else len(text)
            if end > start:
                spans.extend(_paragraph(text, text, start, end))
            if brk is not None:
                start = brk.end()
    spans = _merge_tokenless(text, spans)
    if len(spans) > limit:
        spans = [*spans[: limit - 1], (spans[limit - 1][0], spans[-1][1])]
    return spans


def _emoticon_ends(text: str, start: int, end: int) -> list[int]:
    """Offsets right after an emoticon or emoji followed by white space and a capital."""
    if not _ANY_EYES.search(text, start, end) and (  # most text: one scan in C
        text.isascii() or not _ANY_EMOJI.search(text, start, end)
    ):
        return []
    out = []
    for gap in _CAPITAL_AFTER_SPACE.finditer(text, start, end):
        at = gap.start()
        if at > start and _EMOTICON.search(text, max(start, at - 8), at):
            out.append(at)
    return out


def _as_blank_lines(match: re.Match[str]) -> str:
    return "\n" * len(match.group())


def _paragraph(prepared: str, text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentences of ``text[start:end]`` found in ``prepared`` (the same text, or it with its
    break tags blanked: the same offsets)."""
    import sentencex

    piece = prepared[start:end]
    if not piece.strip():
        return []
    cuts = _emoticon_ends(text, start, end)
    out: list[tuple[int, int]] = []
    append = out.append
    for bound in sentencex.get_sentence_boundaries("en", piece):
        if bound["is_paragraph_break"]:  # white space between paragraphs
            continue
        s, e = start + bound["start_index"], start + bound["end_index"]
        inside = [c for c in cuts if s < c < e] if cuts else ()
        if not inside:
            inner = prepared[s:e]
            if "<" not in inner:  # the common case, inline: strip the white space
                stripped = inner.strip()
                if stripped:
                    blank = len(inner) - len(inner.lstrip())
                    append((s + blank, s + blank + len(stripped)))
                continue
        for a, b in zip([s, *inside], [*inside, e], strict=True):
            span = _trim(prepared, a, b)
            if span is not None:
                append(span)
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span without white space or break tags at its edges (None if nothing is left)."""
    inner = text[start:end]
    if "<" not in inner:  # the common case, without a regex
        stripped = inner.strip()
        if not stripped:
            return None
        blank = len(inner) - len(inner.lstrip())
        return start + blank, start + blank + len(stripped)
    lead = _EDGE_TAGS.match(inner)
    skip = lead.end() if lead else 0
    tail = _EDGE_TAGS.search(inner, skip)
    stop = tail.start() if tail else len(inner)
    if stop <= skip:
        return None
    return start + skip, start + stop


_WORDISH = re.compile(r"[^\W_]|[!?]")


def _readable(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` has a token (a letter, digit, "!" or "?" answers at once)."""
    return _WORDISH.search(text, start, end) is not None or bool(tokenize(text[start:end]))


def _merge_tokenless(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join spans without a token to their neighbour (the one before, else the one after)."""
    out: list[tuple[int, int]] = []
    pending_start: int | None = None
    for s, e in spans:
        if _readable(text, s, e):
            out.append((pending_start if pending_start is not None else s, e))
            pending_start = None
        elif out:
            out[-1] = (out[-1][0], e)
        elif pending_start is None:
            pending_start = s
    if pending_start is not None:  # nothing readable at all: one span over the lot
        return [(pending_start, spans[-1][1])]
    return out
