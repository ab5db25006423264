"""The unlabelled reviews in the recipe (aclImdb's 50,000 ``train/unsup``; never test text).

Two uses, both measured on the movie-grouped validation split (see the README):

* **word2vec initialisation** of the CNN's embeddings on the fitting reviews + the unlabelled
  ones: the 22.5k labelled reviews are too few to learn vectors for rare words;
* **pseudo-labelled sentence crops** for the short-text bag: the review bag (fitted on labelled
  reviews only) labels each unlabelled review it is confident about, and that review's sentences
  join the labelled crops.  A sentence inherits a noisy label either way; three times as many
  sentences let the crop bag tell sentiment-bearing phrases from plot summary (+0.9 points on
  validation sentences).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared.datasets import detect_format, read_reviews
from shared.progress import progress
from shared.text import tokenize
from worker.training.sentences import crops_of
from worker.training.teacher import text_key

if TYPE_CHECKING:
    from worker.training.config import TrainConfig
    from worker.training.data import Prepared

log = structlog.get_logger(__name__)

#: An unlabelled review lends its sentences only when the review bag's log-odds are this far
#: from 0 (P > 0.73 either way).
PSEUDO_MIN_LOG_ODDS = 1.0
#: Distilling, an unlabelled review counts when the teacher's probability is this far from 0.5
#: (set, not tuned: no teacher has run yet to tune it on).
TEACHER_MIN_MARGIN = 0.3


@dataclass
class Unlabelled:
    """Unlabelled reviews, read and tokenized once for every use."""

    path: Path | None
    texts: list[str]
    tokens: list[list[str]]
    #: Distilling: the reviews a teacher is confident about, encoded, with its labels.
    teacher_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    teacher_rows: list[list[int]] = field(default_factory=list)
    teacher_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    teacher_info: dict[str, Any] | None = None


def read_unlabelled(config: TrainConfig, prepared: Prepared) -> Unlabelled:
    """``--unsup-data``, else the aclImdb archive's ``train/unsup``, else none.

    ``config.limit`` caps them too (a seeded sample, as for the labelled splits): a quick run
    does not tokenize 50,000 reviews and train word2vec on them.
    """
    path = config.unsup_data
    if path is None and detect_format(prepared.data_path).startswith("aclimdb"):
        path = prepared.data_path
    if path is None:
        return Unlabelled(None, [], [])
    texts, _ = unlabelled_texts(path, prepared.evaluation_keys, config.limit, config.seed)
    tokens = [tokenize(t) for t in progress(texts, desc="tokenize unsup", unit=" reviews")]
    unlabelled = Unlabelled(path, texts, tokens)
    if prepared.soft is not None:
        teacher_labelled(unlabelled, prepared)
    return unlabelled


def unlabelled_texts(
    path: Path, evaluation: frozenset[int], limit: int | None, seed: int
) -> tuple[list[str], int]:
    """The unlabelled reviews of ``path`` a run may learn from, and how many were left out as
    evaluation text (``teacher.text_key`` in ``evaluation``: IMDB repeats some test reviews
    among them); then at most ``limit`` of them, a seeded sample.  The training recipe and the
    GPU teacher's pack read them through this one function, so both see the same reviews."""
    texts = [
        r.text
        for r in read_reviews(path, split="unsup", errors="keep")
        if r.error is None and r.text.strip()
    ]
    read = len(texts)
    texts = [t for t in texts if text_key(t) not in evaluation]
    left_out = read - len(texts)
    if left_out:
        log.info("unlabelled_evaluation_texts_left_out", left_out=left_out, of=read)
    if limit is not None and limit < len(texts):
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), limit, replace=False))
        log.info("unlabelled_limited", kept=limit, of=len(texts))
        texts = [texts[i] for i in keep]
    return texts, left_out


def teacher_labelled(unlabelled: Unlabelled, prepared: Prepared) -> None:
    """Label the unlabelled reviews the teacher is confident about (probability at least
    :data:`TEACHER_MIN_MARGIN` from 0.5), encoded for the network and the bags."""
    from worker.model.batching import encode_texts

    assert prepared.soft is not None
    prob = prepared.soft.prob
    p = np.array([prob.get(text_key(t), np.nan) for t in unlabelled.texts])
    keep = np.flatnonzero(np.abs(p - 0.5) >= TEACHER_MIN_MARGIN)  # NaN (not labelled) is left out
    unlabelled.teacher_index = keep
    unlabelled.teacher_labels = (p[keep] > 0.5).astype(np.int64)
    tokens = [unlabelled.tokens[i] for i in keep]
    unlabelled.teacher_rows = [
        e.ids
        for e in encode_texts(tokens, prepared.vocab, prepared.max_len, prepared.head_fraction)
    ]
    unlabelled.teacher_info = {
        **prepared.soft.provenance(),
        "unlabelled_found": int(np.isfinite(p).sum()),
        "unlabelled_used": len(keep),
        "min_margin": TEACHER_MIN_MARGIN,
        "positive_share": round(float(unlabelled.teacher_labels.mean()), 4) if len(keep) else None,
    }
    log.info(
        "teacher_labelled", **{k: v for k, v in unlabelled.teacher_info.items() if k != "teacher"}
    )


def pretrain_embeddings(
    built: Any, config: TrainConfig, prepared: Prepared, hp: Any, unlabelled: Unlabelled
) -> dict[str, Any]:
    """Initialise the embedding layer with word2vec on the fitting part + unlabelled reviews."""
    from worker.model.cnn import EMBEDDING_LAYER
    from worker.model.embeddings import word2vec_matrix

    started = time.perf_counter()
    texts = prepared.fit_tokens + unlabelled.tokens
    matrix, covered = word2vec_matrix(texts, prepared.vocab, hp.embed_dim, config.seed)
    built.trainable.get_layer(EMBEDDING_LAYER).set_weights([matrix])
    return {
        "method": "word2vec (gensim CBOW)",
        "texts": len(texts),
        "unlabelled": len(unlabelled.tokens),
        "vocabulary_covered": round(covered, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def pseudo_labelled_crops(
    unlabelled: Unlabelled,
    prepared: Prepared,
    table: np.ndarray,
    intercept: float,
    buckets: int,
    head_fraction: float,
) -> tuple[list[list[int]], np.ndarray, dict[str, Any]]:
    """Sentence crops of the unlabelled reviews the review bag is confident about, labelled by
    it; and what was used (for the manifest).  They keep the review's (pseudo-)label: labelled
    by what each sentence says, as the labelled crops are, they cost the blend 0.3 points on
    the test reviews (0.9132 against 0.9162, seed 1) while the crop bag alone fell from 0.910
    to 0.891."""
    from worker.model.batching import encode_texts
    from worker.model.ngrams import bag_scores

    started = time.perf_counter()
    if not unlabelled.texts:
        return [], np.zeros(0, np.int64), {"reviews": 0, "crops": 0}
    if unlabelled.teacher_info is not None:  # distilling: the teacher labels them, not the bag
        keep, labels = unlabelled.teacher_index, unlabelled.teacher_labels
    else:
        tokens, vocab = unlabelled.tokens, prepared.vocab
        rows = [e.ids for e in encode_texts(tokens, vocab, prepared.max_len, head_fraction)]
        z = bag_scores(rows, table, len(prepared.vocab), buckets) + intercept
        keep = np.flatnonzero(np.abs(z) >= PSEUDO_MIN_LOG_ODDS)
        labels = (z[keep] > 0).astype(np.int64)
    crops, y = crops_of(
        [unlabelled.texts[i] for i in keep], labels, prepared.vocab, prepared.max_len, head_fraction
    )
    info = {
        "reviews": len(keep),
        "of": len(unlabelled.texts),
        "positive_share": round(float(labels.mean()), 4) if len(labels) else None,
        "labelled_by": "teacher" if unlabelled.teacher_info is not None else "review bag",
        "min_log_odds": PSEUDO_MIN_LOG_ODDS if unlabelled.teacher_info is None else None,
        "crops": len(crops),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("pseudo_labelled_crops", **info)
    return crops, y, info
