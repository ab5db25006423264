"""The ``prepare`` step: read the labelled splits, carve the validation split, build the
vocabulary and encode every review for the model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared.aclimdb import aclimdb_movies, ensure_aclimdb
from shared.datasets import DataError, Review, detect_format, read_reviews
from shared.progress import progress
from shared.text import tokenize
from shared.vocab import DEFAULT_HEAD_FRACTION, Vocabulary
from worker.model import CROPS_ARCHITECTURE
from worker.training.sentences import crops_of, opinion_sentences_from, sentences_from
from worker.training.teacher import SoftLabels, check_holdout, read_soft_labels, text_key

if TYPE_CHECKING:
    from shared.config import Settings
    from worker.training.config import TrainConfig

log = structlog.get_logger(__name__)

#: The sequence length is this percentile of the training reviews' token counts.
DEFAULT_LENGTH_PERCENTILE = 95.0


#: How the validation split is carved: whole movies (aclImdb, whose ``urls_*.txt`` name each
#: review's movie) or reviews at random (any other data, and versions trained before).
VAL_BY_MOVIE, VAL_RANDOM = "by movie", "random"


@dataclass
class Split:
    """One labelled split, read and tokenized."""

    reviews: list[Review]
    tokens: list[list[str]]
    labels: np.ndarray
    source: dict[str, Any]


@dataclass
class Prepared:
    """The data of one run, encoded: what ``fit``, ``fit_ngram`` and ``evaluate`` work on."""

    data_path: Path
    vocab: Vocabulary
    max_len: int
    fit_tokens: list[list[str]]
    fit_rows: list[list[int]]
    y_fit: np.ndarray
    val_rows: list[list[int]]
    y_val: np.ndarray
    test_rows: list[list[int]] | None
    y_test: np.ndarray | None
    sources: dict[str, Any]
    val_split: str = VAL_RANDOM
    #: The validation split's seed: the run's, or the teacher's when distilling.
    val_seed: int | None = None
    soft: SoftLabels | None = None
    #: Keys (``teacher.text_key``) of the validation and test reviews: an unlabelled review with
    #: one of these texts (IMDB repeats some across its splits) is not trained on.
    evaluation_keys: frozenset[int] = frozenset()
    head_fraction: float = DEFAULT_HEAD_FRACTION
    #: ``kim_ngram_crops`` only: sentence crops of the fitting reviews (labelled like their
    #: review) and one sentence of each validation review (to fit the short-text blend).
    fit_crops: list[list[int]] = field(default_factory=list)
    y_crops: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_short_rows: list[list[int]] = field(default_factory=list)
    y_val_short: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _fingerprint(reviews: Sequence[Review]) -> str:
    digest = hashlib.sha256()
    for r in reviews:
        digest.update(f"{r.id}\t{r.label}\t{r.text}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def load_split(path: Path, split: str, limit: int | None, seed: int) -> Split:
    """Read, optionally subsample (seeded), and tokenize one labelled split, with progress."""
    reviews = [
        r
        for r in progress(
            read_reviews(path, split=split, labelled=True), desc=f"read {split}", unit=" reviews"
        )
        if r.text.strip()
    ]
    if not reviews:
        raise DataError(path, f"no labelled reviews in split {split!r}")
    if limit is not None and limit < len(reviews):
        keep = np.sort(np.random.default_rng(seed).choice(len(reviews), limit, replace=False))
        reviews = [reviews[i] for i in keep]
    shown = progress(reviews, desc=f"tokenize {split}", unit=" reviews")
    tokens = [tokenize(r.text) for r in shown]
    labels = np.array([r.label for r in reviews], dtype=np.int64)
    source = {
        "path": str(path.name if path.is_file() else path),
        "split": split if detect_format(path).startswith("aclimdb") else None,
        "n": len(reviews),
        "positive": int(labels.sum()),
        "fingerprint": _fingerprint(reviews),
    }
    return Split(reviews, tokens, labels, source)


def movies_of(path: Path, reviews: Sequence[Review]) -> list[str] | None:
    """Each review's movie, when the data is aclImdb with its url lists; else None."""
    if not detect_format(path).startswith("aclimdb"):
        return None
    movies = aclimdb_movies(path, "train")
    keys = [r.id.rsplit("_", 1)[0] for r in reviews]
    missing = sum(1 for k in keys if k not in movies)
    if missing:
        log.warning(
            "validation_split_random",
            reason="aclImdb url lists missing or incomplete: cannot keep movies apart",
            reviews_without_movie=missing,
        )
        return None
    return [movies[k] for k in keys]


def validation_split(
    n: int, seed: int, fraction: float, groups: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(validation, fitting) indices: seeded, ``fraction`` of ``n`` for validation.

    With ``groups`` (each review's movie), whole groups go to validation, in a seeded order,
    until it holds ``fraction`` of the reviews: no movie is on both sides.
    """
    rng = np.random.default_rng(seed)
    n_val = max(1, round(n * fraction))
    if groups is None:
        order = rng.permutation(n)
        return order[:n_val], order[n_val:]
    names, group_of = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(group_of, minlength=len(names))
    chosen = rng.permutation(len(names))
    take = chosen[: int(np.searchsorted(np.cumsum(sizes[chosen]), n_val)) + 1]
    in_val = np.isin(group_of, take)
    val = rng.permutation(np.flatnonzero(in_val))
    fit = rng.permutation(np.flatnonzero(~in_val))
    return val, fit


def sequence_length(tokens: Sequence[Sequence[str]], requested: int | None) -> int:
    """The token cap: as requested, else a high percentile of the training lengths."""
    if requested is not None:
        return requested
    lengths = np.array([len(t) for t in tokens])
    return max(8, int(np.ceil(np.percentile(lengths, DEFAULT_LENGTH_PERCENTILE))))


def prepare(config: TrainConfig, settings: Settings) -> Prepared:
    """Read the splits, carve the seeded validation split, build the vocabulary, encode."""
    from worker.model.batching import encode_texts

    soft = read_soft_labels(config.soft_labels) if config.soft_labels else None  # checked first
    data_path = ensure_aclimdb(config.data, settings.data_dir, config.download)
    train_split = load_split(data_path, "train", config.limit, config.seed)
    test_path = config.test_data or (
        data_path if detect_format(data_path).startswith("aclimdb") else None
    )
    test_split = None
    if test_path is not None and not config.no_test:
        test_split = load_split(test_path, "test", config.limit, config.seed)

    movies = movies_of(data_path, train_split.reviews)
    val_seed = int(soft.meta["pack"]["seed"]) if soft is not None else config.seed
    val_idx, fit_idx = validation_split(
        len(train_split.reviews), val_seed, config.val_fraction, movies
    )
    if soft is not None:
        check_holdout(soft, [train_split.reviews[i].text for i in val_idx])
    evaluation: frozenset[int] = frozenset()
    if config.evaluation_texts_out:  # IMDB repeats texts across its splits: not trained on
        evaluation = frozenset(
            text_key(r.text)
            for r in [train_split.reviews[i] for i in val_idx]
            + (test_split.reviews if test_split is not None else [])
        )
        kept = np.array(
            [i for i in fit_idx if text_key(train_split.reviews[i].text) not in evaluation]
        )
        if len(kept) < len(fit_idx):
            log.info("fit_evaluation_texts_left_out", left_out=len(fit_idx) - len(kept))
        fit_idx = kept.astype(np.int64)
    n_val = len(val_idx)
    fit_tokens = [train_split.tokens[i] for i in fit_idx]
    extra_tokens = [tokenize(text) for text, _ in config.extra] * config.extra_repeat
    extra_labels = np.array([label for _, label in config.extra] * config.extra_repeat, np.int64)
    fit_tokens += extra_tokens
    vocab = Vocabulary.build(fit_tokens, config.vocab_size)
    max_len = sequence_length(fit_tokens, config.seq_len)
    log.info(
        "vocabulary_built",
        size=len(vocab),
        sequence_length=max_len,
        train=len(fit_idx),
        validation=n_val,
    )
    rows = [e.ids for e in encode_texts(train_split.tokens, vocab, max_len, config.head_fraction)]
    extra_rows = [e.ids for e in encode_texts(extra_tokens, vocab, max_len, config.head_fraction)]
    test_rows = None
    if test_split is not None:
        encoded = encode_texts(test_split.tokens, vocab, max_len, config.head_fraction)
        test_rows = [e.ids for e in encoded]
    crops: dict[str, Any] = {}
    if config.arch == CROPS_ARCHITECTURE:
        texts = [r.text for r in train_split.reviews]
        crops["fit_crops"], crops["y_crops"] = crops_of(
            [texts[i] for i in fit_idx],
            train_split.labels[fit_idx],
            vocab,
            max_len,
            config.head_fraction,
            by_sentence=config.sentence_labels,
        )
        # Feedback corrections are mostly chat messages: the short-text bag learns them too
        # (whole, as users sent them, with the same repeat as the review bag).
        crops["fit_crops"] += extra_rows
        crops["y_crops"] = np.concatenate([crops["y_crops"], extra_labels])
        pick = opinion_sentences_from if config.sentence_labels else sentences_from
        short, crops["y_val_short"] = pick(
            [texts[i] for i in val_idx], train_split.labels[val_idx], len(val_idx), config.seed
        )
        crops["val_short_rows"] = [
            vocab.encode(tokenize(t), max_len, config.head_fraction).ids for t in short
        ]
        log.info("sentence_crops", fit=len(crops["fit_crops"]), validation=len(short))
    return Prepared(
        data_path=data_path,
        vocab=vocab,
        max_len=max_len,
        fit_tokens=fit_tokens,
        fit_rows=[rows[i] for i in fit_idx] + extra_rows,
        y_fit=np.concatenate([train_split.labels[fit_idx], extra_labels]),
        val_rows=[rows[i] for i in val_idx],
        y_val=train_split.labels[val_idx],
        test_rows=test_rows,
        y_test=test_split.labels if test_split is not None else None,
        val_split=VAL_RANDOM if movies is None else VAL_BY_MOVIE,
        val_seed=val_seed,
        soft=soft,
        evaluation_keys=evaluation,
        head_fraction=config.head_fraction,
        sources={
            "train": train_split.source,
            "test": test_split.source if test_split is not None else None,
            "extra": {
                "n": len(config.extra),
                "repeat": config.extra_repeat,
                "fingerprint": hashlib.sha256(
                    "\n".join(f"{label}\t{text}" for text, label in config.extra).encode()
                ).hexdigest()[:16],
            }
            if config.extra
            else None,
        },
        **crops,
    )
