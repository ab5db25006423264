"""``build_pack``: the IMDB archive as the GPU teacher's one ``.npz``.

The format, and why: ``worker.training.teacher``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.progress import progress
from shared.text import PREPROCESSING, tokenize
from shared.vocab import Vocabulary
from worker.training.data import load_split, movies_of, validation_split
from worker.training.teacher import (
    DEFAULT_PACK_LEN,
    DEFAULT_PACK_VOCAB,
    FIT,
    HOLDOUT,
    MAX_PACK_BYTES,
    MAX_VOCAB,
    PACK_FORMAT,
    ROLES,
    TEST,
    UNSUP,
    text_key,
)
from worker.training.unlabelled import unlabelled_texts

log = structlog.get_logger(__name__)


def build_pack(
    data: Path,
    out: Path,
    *,
    seed: int = 1,
    val_fraction: float = 0.1,
    vocab_size: int = DEFAULT_PACK_VOCAB,
    max_len: int = DEFAULT_PACK_LEN,
    limit: int | None = None,
    with_test: bool = True,
) -> dict[str, Any]:
    """Write the teacher's pack for the aclImdb archive ``data``; return its ``meta``.

    The holdout is the CPU recipe's validation split for ``seed`` (whole movies, as
    ``sentiment-train`` carves it), so a recipe distilling from these soft labels validates on
    reviews the teacher never learned from.  No test text enters the vocabulary.
    """
    if not 3 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in [3, {MAX_VOCAB}]")
    started = time.perf_counter()
    train = load_split(data, "train", limit, seed)
    val_idx, fit_idx = validation_split(
        len(train.reviews), seed, val_fraction, movies_of(data, train.reviews)
    )
    test = load_split(data, "test", limit, seed)  # its texts are left out even if not packed
    # IMDB repeats some texts across its splits: a fitting or unlabelled review that is also a
    # holdout or test review is left out (as sentiment-train leaves it out), so the teacher
    # never learns from evaluation text.
    evaluation = {text_key(train.reviews[i].text) for i in val_idx}
    evaluation |= {text_key(r.text) for r in test.reviews}
    in_fit = [i for i in fit_idx if text_key(train.reviews[i].text) not in evaluation]
    dropped_fit = len(fit_idx) - len(in_fit)
    keep_train = np.sort(np.concatenate([val_idx, in_fit])).astype(np.int64)
    role = np.full(len(train.reviews), FIT, dtype=np.uint8)
    role[val_idx] = HOLDOUT
    role = role[keep_train]
    # the same reviews as sentiment-train reads, through the same function
    unsup, left_out = unlabelled_texts(data, frozenset(evaluation), limit, seed)
    unsup_tokens = [tokenize(t) for t in progress(unsup, desc="tokenize unsup", unit=" reviews")]
    vocab = Vocabulary.build([train.tokens[i] for i in in_fit] + unsup_tokens, vocab_size)
    texts = [train.reviews[i].text for i in keep_train] + unsup
    tokens = [train.tokens[i] for i in keep_train] + unsup_tokens
    roles = [role, np.full(len(unsup), UNSUP, dtype=np.uint8)]
    labels = [train.labels[keep_train].astype(np.int8), np.full(len(unsup), -1, dtype=np.int8)]
    sources: dict[str, Any] = {
        "train": {**train.source, "fit_left_out_as_evaluation_text": dropped_fit},
        "unsup": {"n": len(unsup), "path": data.name, "left_out_as_evaluation_text": left_out},
    }
    if with_test:
        texts += [r.text for r in test.reviews]
        tokens += test.tokens
        roles.append(np.full(len(test.reviews), TEST, dtype=np.uint8))
        labels.append(test.labels.astype(np.int8))
        sources["test"] = test.source
    rows = [vocab.encode(t, max_len).ids for t in progress(tokens, desc="encode", unit=" reviews")]
    ids = np.fromiter((i for r in rows for i in r), dtype=np.uint16, count=sum(map(len, rows)))
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    keys = np.array([text_key(t) for t in texts], dtype=np.uint64)
    role_all = np.concatenate(roles)
    learnt = np.repeat(np.isin(role_all, (FIT, UNSUP)), np.diff(offsets))
    counts = np.bincount(ids[learnt], minlength=len(vocab)).astype(np.int64)  # fit + unsup only
    if len(np.unique(keys)) != len(keys):
        log.warning(
            "teacher_pack_duplicate_texts", duplicates=int(len(keys) - len(np.unique(keys)))
        )
    reviews = {ROLES[k]: int((role_all == k).sum()) for k in ROLES}
    meta: dict[str, Any] = {
        "format": PACK_FORMAT,
        "preprocessing": PREPROCESSING,
        "vocab_size": len(vocab),
        "vocab_fingerprint": vocab.fingerprint,
        "max_len": max_len,
        "seed": seed,
        "val_fraction": val_fraction,
        "limit": limit,
        "reviews": reviews,
        "tokens": len(ids),
        "sources": sources,
        "note": "holdout = sentiment-train's validation split for this seed; test: report only",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        np.savez_compressed(
            f,
            ids=ids,
            offsets=offsets,
            role=role_all,
            label=np.concatenate(labels),
            key=keys,
            counts=counts,
            meta=np.array(json.dumps(meta)),
        )
    size = out.stat().st_size
    log.info(
        "teacher_pack_written",
        path=str(out),
        mib=round(size / (1 << 20), 1),
        seconds=round(time.perf_counter() - started, 1),
        **reviews,
    )
    if size > MAX_PACK_BYTES:
        out.unlink()
        raise ValueError(
            f"the pack would be {size / (1 << 20):.1f} MiB, over {MAX_PACK_BYTES >> 20} MiB: "
            "the GPU machine takes 64 MiB with the code; use a smaller --vocab-size or --max-len"
        )
    return meta
