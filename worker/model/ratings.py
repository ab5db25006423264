"""Ratings written as numbers in a short text: "8/10", "4.5/5", "2 out of 10", "five stars".

A rating is the writer's own score; ``worker.model.compose`` answers the clause that holds one
by it (reversed when negated).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: A rating's log-odds: ``RATING_SCALE * (2 * fraction - 1)`` (10/10: +3, 1/10: -2.4, 5/10: 0).
RATING_SCALE = 3.0
_SLASH = re.compile(r"(\d{1,3}(?:\.\d)?)/(5|10|100)")
_DECIMAL = re.compile(r"\d{1,3}(?:\.\d)?")
#: "2 stars in it", "two stars who ...": actors, not a rating.
_CAST = [[w] for w in ("in", "of", "who", "that", "and", "are", "were", "like", "play")]
_NUMBERS = "zero one two three four five six seven eight nine ten"
_NUMBER_WORDS = {w: str(n) for n, w in enumerate(_NUMBERS.split())}


def ratings(tokens: Sequence[str]) -> list[tuple[tuple[int, ...], float]]:
    """Ratings written as numbers: "8/10", "4.5/5", "2 out of 10", "5 stars", "one star" (out
    of five), each as (its token positions, ``RATING_SCALE * (2 * fraction - 1)``)."""
    found: list[tuple[tuple[int, ...], float]] = []
    for i, word in enumerate(tokens):
        share: float | None = None
        at: tuple[int, ...] = (i,)
        whole = _SLASH.fullmatch(word)
        if whole:
            share = float(whole[1]) / float(whole[2])
        elif word == "out" and i > 0 and tokens[i + 1 : i + 2] == ["of"] and i + 2 < len(tokens):
            share, at = _fraction(tokens[i - 1], tokens[i + 2]), (i - 1, i, i + 1, i + 2)
        elif word in ("star", "stars") and i > 0 and tokens[i + 1 : i + 2] not in _CAST:
            share, at = _fraction(tokens[i - 1], "5"), (i - 1, i)
        if share is not None and 0.0 <= share <= 1.0:
            found.append((at, RATING_SCALE * (2.0 * share - 1.0)))
    return found


def _fraction(number: str, scale: str) -> float | None:
    """``number`` (digits or a word up to ten) over ``scale`` (5, 10 or 100), else None."""
    value = _NUMBER_WORDS.get(number, number)
    scale = _NUMBER_WORDS.get(scale, scale)
    if scale not in ("5", "10", "100") or not _DECIMAL.fullmatch(value):
        return None
    return float(value) / float(scale)
