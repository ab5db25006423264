"""What each opinion is about: the target words of a sentence, and a review's summary of them.

A sentence's targets are its words that are nouns reviews talk about (``aspects.txt``, learnt
from unlabelled reviews by ``worker.training.aspects``) or that follow a determiner ("the
battery", "its waiter"), other than the sentence's own reasons (the opinion words): "The
acting was superb and the music is gorgeous." -> acting, music.  A review's summary groups
the targets of its opinionated sentences by side: "positive about acting, music; negative
about plot, ending".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from shared.sentences import MAX_SENTENCES

LEXICON_FILE = Path(__file__).with_name("aspects.txt")
_DETERMINERS = "the this that these those its his her their our my your"
DETERMINERS = frozenset(_DETERMINERS.split())
#: Words too general to say what an opinion is about.
_GENERIC = """
    movie movies film films flick show shows series episode episodes thing things way ways
    time times lot bit kind sort fact point part parts one ones something anything everything
    nothing someone anyone everyone people person guy guys stuff end rest whole same first
    last other others next entire main original final new old real least most best worst
    right left world life day days year years minute minutes hour hours"""
GENERIC = frozenset(_GENERIC.split())
MAX_TARGETS = 3


@cache
def lexicon() -> frozenset[str]:
    """The learnt targets (empty when the file is missing: determiner cues still work)."""
    if not LEXICON_FILE.exists():
        return frozenset()
    lines = LEXICON_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.split("\t", 1)[0] for line in lines if line and line[0] != "#")


@cache
def skipped() -> frozenset[str]:
    from worker.model.verdict import FUNCTION_WORDS, NEGATIONS

    return GENERIC | FUNCTION_WORDS | NEGATIONS


def targets_of(tokens: Sequence[str], reasons: Collection[str]) -> list[str]:
    """The target words of one sentence's tokens, in order, at most ``MAX_TARGETS``."""
    known, skip = lexicon(), skipped()
    out: list[str] = []
    for i, token in enumerate(tokens):
        if len(token) < 3 or token in skip or token in out:
            continue
        if token in reasons and token not in known:  # a known target stays one, reason or not
            continue
        if not token.isalpha():
            continue
        if token in known or (i > 0 and tokens[i - 1] in DETERMINERS and not token.endswith("ly")):
            out.append(token)
            if len(out) == MAX_TARGETS:
                break
    return out


def summary(sentences: Sequence[Mapping[str, Any]], verdict: str) -> dict[str, list[str]]:
    """Targets of a review's opinionated sentences (probability at least ``SIDE`` for their
    label) by side, most mentioned first (ties: first mentioned); none for a neutral review."""
    from worker.model.verdict import SIDE

    counts: dict[str, dict[str, int]] = {"positive": {}, "negative": {}}
    for s in sentences[:MAX_SENTENCES] if verdict != "neutral" else ():
        if s.get("label") not in counts or s["scores"][s["label"]] < SIDE:
            continue
        side = counts[s["label"]]
        for t in s.get("targets") or []:
            side[t] = side.get(t, 0) + 1
    return {label: sorted(side, key=lambda t: -side[t])[:6] for label, side in counts.items()}


def describe(about: Mapping[str, Sequence[str]]) -> str:
    """``"positive about acting, music; negative about plot, ending"`` (empty if none)."""
    parts = [f"{label} about {', '.join(words)}" for label, words in about.items() if words]
    return "; ".join(parts)
