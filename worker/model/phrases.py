"""From attributions to what an answer shows: NumPy on whole padded batches, no TF graph.

``worker.model.explain`` computes each token's share of the CNN's log-odds; here the n-gram
bags add their exact shares (``add_bag``), the best non-overlapping spans become the phrases
(``best_phrases``), the largest summed weights the top words (``top_words``), and spans become
text (``phrase_texts``).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.vocab import OOV_ID
from worker.model.layers import BIGRAM_HASH

MAX_PHRASES = 5
PHRASE_CANDIDATES = 12  # best spans kept per window width before removing overlaps


def add_bag(
    bag: tuple[np.ndarray, int, int],
    coef: np.ndarray,
    ids: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Add one n-gram bag's exact shares to ``weights``; return per-bigram weights.

    ``coef`` is the bag's blend weight for each row.  A unigram's weight is split between its
    occurrences in the row, a hashed bigram's between its occurrences and then half to each
    of its two tokens (keys are offset per row so one ``np.unique`` counts occurrences for
    the whole batch).
    """
    table, vocab_size, buckets = bag
    size, width = ids.shape
    coef = np.broadcast_to(coef[:, None], ids.shape)  # per position, no copy
    row = np.arange(size, dtype=np.int64)[:, None]
    kept = ids[valid]
    _, inverse, counts = np.unique(
        (ids + row * vocab_size)[valid], return_inverse=True, return_counts=True
    )
    weights[valid] += coef[valid] * table[kept] / counts[inverse]
    share = np.zeros((size, width))
    if width > 1:
        pairs = valid[:, 1:]
        bigrams = (ids[:, :-1] * BIGRAM_HASH + ids[:, 1:]) % buckets
        _, inverse, counts = np.unique(
            (bigrams + row * buckets)[pairs], return_inverse=True, return_counts=True
        )
        share[:, :-1][pairs] = (
            coef[:, :-1][pairs] * table[vocab_size + bigrams[pairs]] / counts[inverse]
        )
        weights[:, :-1] += share[:, :-1] / 2
        weights[:, 1:] += share[:, :-1] / 2
    return share


def best_phrases(
    spans: dict[int, np.ndarray], lengths: np.ndarray, sign: np.ndarray
) -> list[list[tuple[int, int, float]]]:
    """Per row, the best non-overlapping spans of two or more tokens that support the label."""
    size, width = len(lengths), max((s.shape[1] for s in spans.values()), default=0)
    if not spans or width < 2:
        return [[] for _ in range(size)]
    m = min(PHRASE_CANDIDATES, width)
    starts, ends, values = [], [], []
    # A phrase starts on a real token and has at least two: start <= n - 2.
    room = np.arange(width)[None, :] <= (lengths - 2)[:, None]
    for k, span in spans.items():
        if k < 2:
            continue
        oriented = np.where(room, span * sign[:, None], -np.inf)
        top = np.argpartition(-oriented, m - 1, axis=1)[:, :m]
        starts.append(top)
        ends.append(np.minimum(top + k, lengths[:, None]))
        values.append(np.take_along_axis(oriented, top, axis=1))
    if not starts:
        return [[] for _ in range(size)]
    value = np.concatenate(values, axis=1)
    order = np.argsort(-value, axis=1, kind="stable")
    best = zip(
        np.take_along_axis(np.concatenate(starts, axis=1), order, axis=1).tolist(),
        np.take_along_axis(np.concatenate(ends, axis=1), order, axis=1).tolist(),
        np.take_along_axis(value, order, axis=1).tolist(),
        strict=True,
    )
    return [non_overlapping(list(zip(s, e, v, strict=True))) for s, e, v in best]


def top_words(
    ids: np.ndarray,
    valid: np.ndarray,
    oriented: np.ndarray,
    tokens: Sequence[Sequence[str]],
    k: int,
) -> list[list[list[Any]]]:
    """Per row, the ``k`` token types with the largest summed weight by magnitude.

    In-vocabulary tokens are summed per (row, id) for the whole batch at once; OOV tokens
    share one id, so they are summed per string, and both lists are merged per row.
    """
    size = ids.shape[0]
    in_vocab = valid & (ids != OOV_ID)
    rows, cols = np.nonzero(in_vocab)
    span = int(ids.max()) + 1
    keys, first, inverse = np.unique(
        rows * span + ids[rows, cols].astype(np.int64), return_index=True, return_inverse=True
    )
    sums = np.bincount(inverse, weights=oriented[rows, cols], minlength=len(keys))
    key_rows = keys // span
    order = np.lexsort((-np.abs(sums), key_rows))
    bounds = np.searchsorted(key_rows[order], np.arange(size + 1))
    oov_rows, oov_cols = np.nonzero(valid & (ids == OOV_ID))
    oov: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for b, p in zip(oov_rows.tolist(), oov_cols.tolist(), strict=True):
        oov[b][tokens[b][p]] += float(oriented[b, p])
    out: list[list[list[Any]]] = []
    for b in range(size):
        chosen = order[bounds[b] : min(bounds[b + 1], bounds[b] + k)]
        pairs = [
            (tokens[b][c], w)
            for c, w in zip(cols[first[chosen]].tolist(), sums[chosen].tolist(), strict=True)
        ]
        if b in oov:
            pairs = heapq.nlargest(k, pairs + list(oov[b].items()), key=lambda item: abs(item[1]))
        out.append([[token, round(weight, 4)] for token, weight in pairs])
    return out


def non_overlapping(ranked: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Greedily keep the best phrases (ranked best first) that share no token with a better one.

    Only spans that support the label (weight > 0) qualify.
    """
    kept: list[tuple[int, int, float]] = []
    for start, end, weight in ranked:
        if not weight > 0:
            break
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, weight))
            if len(kept) == MAX_PHRASES:
                break
    return kept


def phrase_texts(
    tokens: Sequence[str], phrases: Sequence[tuple[int, int, float]]
) -> list[list[Any]]:
    """Token spans as ``[text, weight]`` pairs."""
    return [[" ".join(tokens[s:e]), round(w, 4)] for s, e, w in phrases]
