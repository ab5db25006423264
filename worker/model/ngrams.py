"""Fitting the NBSVM-style n-gram branch: NB log-count ratios times a logistic regression.

Wang & Manning (2012): binarised unigram+bigram features scaled by the naive-Bayes log-count
ratio ``r``, then an L2 logistic regression.  The product ``r * w`` is one weight per feature,
which :class:`worker.model.layers.NgramBag` sums over the unique features of a text inside the
model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from worker.model.layers import BIGRAM_HASH


def feature_ids(ids: Sequence[int], vocab_size: int, buckets: int) -> np.ndarray:
    """Unique unigram + hashed-bigram feature ids of one text (NumPy twin of the layer)."""
    a = np.asarray(ids, dtype=np.int64)
    a = a[a != 0]
    parts = [a]
    if len(a) > 1:
        parts.append(vocab_size + (a[:-1] * BIGRAM_HASH + a[1:]) % buckets)
    return np.unique(np.concatenate(parts))


def feature_matrix(rows: Sequence[Sequence[int]], vocab_size: int, buckets: int) -> sp.csr_matrix:
    """Binary (rows x features) matrix of the unique n-gram features of each row."""
    cols = [feature_ids(r, vocab_size, buckets) for r in rows]
    indptr = np.cumsum([0] + [len(c) for c in cols])
    data = np.ones(indptr[-1], dtype=np.float32)
    indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), vocab_size + buckets))


def fit_nb_logreg(
    rows: Sequence[Sequence[int]],
    labels: np.ndarray,
    vocab_size: int,
    buckets: int,
    c: float = 0.1,
    alpha: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Return the per-feature weights ``r * w`` (float32; PAD weighs 0) and the intercept."""
    from sklearn.linear_model import LogisticRegression

    x = feature_matrix(rows, vocab_size, buckets)
    p = np.asarray(x[labels == 1].sum(axis=0)).ravel() + alpha
    q = np.asarray(x[labels == 0].sum(axis=0)).ravel() + alpha
    r = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
    clf = LogisticRegression(C=c, max_iter=1000, solver="liblinear")
    clf.fit(x @ sp.diags(r), labels)
    table = (r * clf.coef_.ravel()).astype(np.float32)
    table[0] = 0.0
    return table, float(clf.intercept_[0])


def bag_scores(
    rows: Sequence[Sequence[int]], table: np.ndarray, vocab_size: int, buckets: int
) -> np.ndarray:
    """Score of each row without intercept, as :class:`worker.model.layers.NgramBag` computes it."""
    return np.array(
        [table[feature_ids(r, vocab_size, buckets)].sum() for r in rows], dtype=np.float32
    )
