"""The project's side of the GPU teacher: the data pack it reads, the soft labels it writes back.

A teacher network trained on a GPU (``worker/training/teacher_gpu.py``, PyTorch only) is stronger
than anything two CPU cores train in 30 minutes; its class probabilities for the training and
unlabelled reviews ("soft labels") are committed to the repository, and the CPU recipe distils
from them (``sentiment-train --soft-labels``) without a GPU, reproducibly.

The GPU machine has no TensorFlow, none of our dependencies and at most 64 MiB of carried data,
so ``worker.training.teacher_pack.build_pack`` turns the IMDB archive into one ``.npz`` of
token ids (our tokenizer, a vocabulary of the teacher's own built on the fitting and unlabelled
reviews only):

``ids`` (uint16, all reviews end to end) and ``offsets``; ``role`` per review (:data:`FIT`: the
teacher trains on it; :data:`HOLDOUT`: the CPU recipe's validation split, never trained on by the
teacher, which selects its epoch there; :data:`UNSUP`: unlabelled; :data:`TEST`: reported only);
``label`` (-1 when unknown); ``key``, a 64-bit digest of the review's text, by which the soft
labels are matched back to reviews; ``counts``, each id's frequency; ``meta``, JSON provenance.

The teacher writes ``key``, ``prob`` (positive class, float16) and ``role`` for the fitting,
holdout and unlabelled reviews, and ``meta`` (its settings, accuracy on the holdout and test
reviews, the pack's SHA-256).  :func:`read_soft_labels` checks and loads them.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.datasets import DataError
from shared.store import sha256_file
from shared.text import PREPROCESSING

log = structlog.get_logger(__name__)

PACK_FORMAT = "review-sentiment teacher pack 1"
SOFT_FORMAT = "review-sentiment soft labels 1"
FIT, HOLDOUT, UNSUP, TEST = 0, 1, 2, 3
ROLES = {FIT: "fit", HOLDOUT: "holdout", UNSUP: "unsup", TEST: "test"}
#: uint16 ids: the teacher's vocabulary is at most this size (PAD and OOV included).
MAX_VOCAB = 1 << 16
DEFAULT_PACK_VOCAB = 60_000
#: Tokens kept of a review (head and tail, as the served model does): 98% of IMDB reviews fit.
DEFAULT_PACK_LEN = 800
#: The device machine takes at most 64 MiB with the working tree (2 MiB without ``models/``,
#: which is untracked for the run: docs/model.md, "The GPU teacher").
MAX_PACK_BYTES = 56 << 20


def text_key(text: str) -> int:
    """A review's 64-bit key: the first 8 bytes of BLAKE2b of its text (as read, UTF-8)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class SoftLabels:
    """A teacher's positive-class probability for each review it labelled, by text key."""

    path: Path
    prob: dict[int, float]
    holdout: frozenset[int]
    meta: dict[str, Any]

    def provenance(self) -> dict[str, Any]:
        """What a manifest records about them."""
        teacher = self.meta.get("teacher", {})
        return {
            "path": self.path.name,
            "sha256": sha256_file(self.path),
            "reviews": len(self.prob),
            "holdout": len(self.holdout),
            "pack_sha256": self.meta.get("pack_sha256"),
            "pack": self.meta.get("pack"),
            "teacher": {
                k: teacher.get(k)
                for k in ("model", "config", "device", "torch", "seconds", "accuracy")
            },
        }


def read_soft_labels(path: Path) -> SoftLabels:
    """Load and check a teacher's soft labels (:data:`SOFT_FORMAT`); DataError when unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            key, prob, role = z["key"], z["prob"].astype(np.float64), z["role"]
            meta = json.loads(str(z["meta"]))
        int(meta["pack"]["seed"])
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a soft-label file: {exc!r}") from exc
    if meta.get("format") != SOFT_FORMAT:
        raise DataError(path, f"format {meta.get('format')!r}, expected {SOFT_FORMAT!r}")
    if not (len(key) == len(prob) == len(role)) or not np.all((prob >= 0) & (prob <= 1)):
        raise DataError(path, "keys, probabilities and roles disagree or are out of range")
    if meta.get("preprocessing", {}).get("version") != PREPROCESSING["version"]:
        raise DataError(path, "made from a pack with other preprocessing rules")
    return SoftLabels(
        path=path,
        prob=dict(zip(key.tolist(), prob.tolist(), strict=True)),
        holdout=frozenset(key[role == HOLDOUT].tolist()),
        meta=meta,
    )


def check_holdout(soft: SoftLabels, validation_texts: list[str]) -> None:
    """Raise DataError unless the run's validation reviews are exactly the teacher's holdout."""
    keys = {text_key(t) for t in validation_texts}
    if keys != soft.holdout:
        raise DataError(
            soft.path,
            f"the teacher's holdout ({len(soft.holdout)} reviews) is not this run's validation "
            f"split ({len(keys)} reviews, {len(keys & soft.holdout)} shared): soft labels made "
            "for other data, --limit or --val-fraction",
        )
