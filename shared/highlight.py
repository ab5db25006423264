"""Find a review's top words in its original text, for every front-end that marks them.

The tokenizer lower-cases, folds apostrophes and drops punctuation, so a result's top words
(``[token, weight]`` pairs) are not substrings of the text the user wrote.  ``word_spans`` finds
the words and numbers of the original text that tokenize to a weighted token, with character
offsets; the bot (HTML), the command line (ANSI colours) and the web page (a heat map) each
render those spans in their own way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "´": "'"})
# What the tokenizer makes single tokens of, found in the original text: words (with inner
# apostrophes) and numbers (7/10, 1,000, 2.5).
_WORD = re.compile(
    r"[^\W\d_]+(?:['\u2019\u2018\u02bc`´][^\W\d_]+)*|\d+(?:[.,]\d+)*(?:/\d+(?:\.\d+)?)?"
)


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is a word whose token carries ``weight``."""

    start: int
    end: int
    weight: float


def weights_of(pairs: Iterable[Sequence[Any]]) -> dict[str, float]:
    """``[[token, weight], ...]`` (a result's top words) as a mapping."""
    return {str(token): float(weight) for token, weight in pairs}


def word_spans(text: str, weights: Mapping[str, float]) -> list[Span]:
    """Every occurrence in ``text`` of a word whose token has a weight, in text order."""
    spans = []
    for match in _WORD.finditer(text):
        raw = match.group()
        key = raw.casefold().translate(_APOSTROPHES).replace(",", "")
        end = match.end()
        if key not in weights and key.endswith("'s") and key[:-2] in weights:
            key, end = key[:-2], end - 2  # the clitic 's is its own token
        weight = weights.get(key)
        if weight is not None:
            spans.append(Span(match.start(), end, weight))
    return spans


def mark(
    text: str,
    weights: Mapping[str, float],
    style: Callable[[str, float], str],
    plain: Callable[[str], str] = lambda s: s,
) -> str:
    """``text`` with each weighted word replaced by ``style(word, weight)`` (rest: ``plain``)."""
    out, pos = [], 0
    for span in word_spans(text, weights):
        out.append(plain(text[pos : span.start]))
        out.append(style(text[span.start : span.end], span.weight))
        pos = span.end
    out.append(plain(text[pos:]))
    return "".join(out)


GREEN, RED, BOLD, RESET = "\033[32m", "\033[31m", "\033[1m", "\033[0m"


def for_terminal(text: str, top_words: Iterable[Sequence[Any]], color: bool) -> str:
    """``text`` with its top words in green (support the label) or red (oppose it), or, when
    ``color`` is off, marked ``[+word]`` / ``[-word]``."""

    def style(word: str, weight: float) -> str:
        if color:
            return f"{GREEN if weight > 0 else RED}{BOLD}{word}{RESET}"
        return f"[{'+' if weight > 0 else '-'}{word}]"

    return mark(text, weights_of(top_words), style)
