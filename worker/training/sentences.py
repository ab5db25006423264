"""Sentences cut from reviews: what chat users send, for training and for evaluation.

* ``sentences_of``: a review's sentences;
* ``sentences_from``: a seeded sample of one 5-40 word sentence per review, labelled like its
  review (the short-text validation, calibration, gate and benchmark sets);
* ``crops_of``: every sentence of a few tokens or more, encoded and labelled like its review
  (the sentence-crop bag of ``kim_ngram_crops``).

No TensorFlow here: the data step, the calibration and the gate all use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from shared.progress import progress
from shared.text import tokenize
from shared.vocab import Vocabulary

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

#: A crop needs this many tokens to be trained on ("Great." alone says little about a review).
MIN_CROP_TOKENS = 3


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


def crops_of(
    texts: Sequence[str], labels: np.ndarray, vocab: Vocabulary, max_len: int, head: float
) -> tuple[list[list[int]], np.ndarray]:
    """Every sentence of at least ``MIN_CROP_TOKENS`` tokens of each text, labelled like it."""
    rows, out = [], []
    for text, label in zip(
        progress(texts, desc="sentence crops", unit=" reviews"), labels, strict=True
    ):
        for sentence in sentences_of(text):
            tokens = tokenize(sentence)
            if len(tokens) >= MIN_CROP_TOKENS:
                rows.append(vocab.encode(tokens, max_len, head).ids)
                out.append(int(label))
    return rows, np.array(out, dtype=np.int64)
