"""Sentences cut from reviews: what chat users send, for training and for evaluation.

* ``sentences_of``: a review's sentences;
* ``sentences_from``: a seeded sample of one 5-40 word sentence per review, labelled like its
  review (the short-text validation, calibration, gate and benchmark sets);
* ``crops_of``: every sentence of a few tokens or more, encoded and labelled like its review
  (the sentence-crop bag of ``kim_ngram_crops``), or with ``by_sentence`` by what the sentence
  itself says (``sentence_labels``);
* ``opinion_sentences_from``: like ``sentences_from``, labelled by ``sentence_labels`` (the
  short-text blend and calibration: what a one-line message says, not its review).

**Sentence labels.**  A sentence of a positive review is often no praise at all ("The film
opens in 1944.", "Where was it shot?") and sometimes a concession ("The effects were awful").
Labelled like its review, such sentences teach a short-text model that plain words lean one
way and opinion words only a little (v0007: "I hate it" at log-odds -0.5).  ``sentence_labels``
asks an annotator independent of our models, **VADER** (Hutto & Gilbert 2014; its human-rated
lexicon ships in the ``vadersentiment`` wheel, MIT): a sentence VADER scores on its review's
side keeps the review's label; a **statement** or a question without a single lexicon word
says nothing either way and is trained with *both* labels (half each: no opinion); a sentence
VADER scores clearly against its review is left out (a concession, irony, a quote); the rest
keep their review's label, as before (VADER does not know "returned it" or "stopped working").

No TensorFlow here: the data step, the calibration and the gate all use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.progress import progress
from shared.text import tokenize
from shared.vocab import Vocabulary

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

#: A crop needs this many tokens to be trained on ("Great." alone says little about a review).
MIN_CROP_TOKENS = 3
#: VADER compound an opinion sentence has on its review's side (``worker.training.verdicts``).
OPINION = 0.5
#: Tokens a statement never has: what turns a description into an opinion or a hedge.
_NOT_IN_STATEMENTS = """
    i me my mine myself we us our you your yours would should could might must may can
    not no never nothing nor neither don't doesn't didn't isn't aren't wasn't weren't won't
    wouldn't couldn't shouldn't can't cannot very really so too quite pretty most least
    just even only ever enough rather"""
NOT_IN_STATEMENTS = frozenset(_NOT_IN_STATEMENTS.split())
_QUOTES = ('"', "\u201c", "\u201d")
#: A statement has at least this many tokens ("The film opens in 1944 in a small town.").
STATEMENT_TOKENS = 6
NO_OPINION = (0, 1)


def vader() -> Any:
    """VADER's analyser (imported on first use: only training and its tools need it)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def is_statement(sentence: str, tokens: Sequence[str], scores: dict[str, float]) -> bool:
    """No lexicon word, "!", "?", quotes, negation, first or second person, modal verb or
    intensifier, and at least ``STATEMENT_TOKENS`` tokens: a description, not an opinion."""
    return (
        scores["neu"] == 1.0
        and len(tokens) >= STATEMENT_TOKENS
        and not any(c in sentence for c in ("!", "?", *_QUOTES))
        and not any(t in NOT_IN_STATEMENTS for t in tokens)
    )


def sentence_labels(
    analyser: Any, sentence: str, tokens: Sequence[str], label: int
) -> tuple[int, ...]:
    """The labels a sentence of a review labelled ``label`` is trained with (module doc)."""
    scores = analyser.polarity_scores(sentence)
    side = scores["compound"] * (1 if label == 1 else -1)
    if side >= OPINION:
        return (label,)
    if is_statement(sentence, tokens, scores) or (
        scores["neu"] == 1.0 and sentence.rstrip().endswith("?") and "!" not in sentence
    ):
        return NO_OPINION
    if side <= -OPINION:
        return ()
    return (label,)


def sentences_of(text: str) -> list[str]:
    """The sentences of a review (split after . ! ? and at line breaks), stripped."""
    return [s.strip() for s in _SENTENCE.split(_BREAK.sub(" ", text)) if s.strip()]


def sentences_from(
    texts: list[str], labels: np.ndarray, n: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Sample ``n`` sentences of 5-40 words from the reviews, labelled like their review."""
    rng = np.random.default_rng(seed)
    out, out_labels = [], []
    for i in rng.permutation(len(texts)):
        candidates = [s for s in sentences_of(texts[i]) if 5 <= len(s.split()) <= 40]
        if candidates:
            out.append(candidates[rng.integers(len(candidates))])
            out_labels.append(labels[i])
        if len(out) == n:
            break
    return out, np.array(out_labels, dtype=np.int64)


def opinion_sentences_from(
    texts: list[str], labels: np.ndarray, n: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Up to ``n`` sentences of 5-40 words, one per review (seeded), with ``sentence_labels``:
    a statement comes twice, once with each label; a sentence against its review not at all."""
    analyser = vader()
    rng = np.random.default_rng(seed)
    out, out_labels = [], []
    for i in rng.permutation(len(texts)):
        candidates = [s for s in sentences_of(texts[i]) if 5 <= len(s.split()) <= 40]
        if not candidates:
            continue
        sentence = candidates[rng.integers(len(candidates))]
        for y in sentence_labels(analyser, sentence, tokenize(sentence), int(labels[i])):
            out.append(sentence)
            out_labels.append(y)
        if len(out) >= n:
            break
    return out, np.array(out_labels, dtype=np.int64)


def crops_of(
    texts: Sequence[str],
    labels: np.ndarray,
    vocab: Vocabulary,
    max_len: int,
    head: float,
    by_sentence: bool = False,
) -> tuple[list[list[int]], np.ndarray]:
    """Every sentence of at least ``MIN_CROP_TOKENS`` tokens of each text, labelled like it
    (``by_sentence``: with ``sentence_labels``)."""
    analyser = vader() if by_sentence else None
    rows, out = [], []
    for text, label in zip(
        progress(texts, desc="sentence crops", unit=" reviews"), labels, strict=True
    ):
        for sentence in sentences_of(text):
            tokens = tokenize(sentence)
            if len(tokens) >= MIN_CROP_TOKENS:
                ids = vocab.encode(tokens, max_len, head).ids
                ys = (
                    (int(label),)
                    if analyser is None
                    else sentence_labels(analyser, sentence, tokens, int(label))
                )
                for y in ys:
                    rows.append(ids)
                    out.append(y)
    return rows, np.array(out, dtype=np.int64)
