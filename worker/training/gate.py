"""The publishing gate: a challenger against the serving champion, on the same fixed sets.

Three sets, each scored for both models with the same preprocessing the workers apply:

* **test**: the fixed labelled test split (IMDB's 25k test reviews in production);
* **short**: single sentences cut from those test reviews (what chat users send), labelled like
  their review, sampled with a fixed seed (``sentences_from``);
* **feedback**: the votes held out by time (the newest), or, while there are too few to hold out,
  the votes the challenger trained on (then it shows whether the corrections were learnt).

The challenger may be published only when, on every set, its accuracy is not below the
champion's by more than that set's tolerance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.schema import LABELS

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


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


@dataclass(frozen=True)
class EvalSet:
    """Labelled texts, and how the set was made (recorded with the decision)."""

    name: str
    texts: list[str]
    labels: np.ndarray
    note: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def accuracy(served: Any, texts: Sequence[str], labels: np.ndarray) -> float:
    """Accuracy of a loaded version (``worker.model.served.Served``) on labelled texts, as the
    worker answers them (its calibration applied)."""
    from worker.training.calibrate import answer_probs

    if not texts:
        return float("nan")
    return float(((answer_probs(served, list(texts)) > 0.5).astype(int) == labels).mean())


@dataclass(frozen=True)
class Tolerances:
    """How far (in accuracy, 0.01 = one point) a challenger may fall behind on each set."""

    test: float = 0.005
    short: float = 0.01
    feedback: float = 0.02

    def of(self, name: str) -> float:
        return float(getattr(self, name))


def compare(champion: Any, challenger: Any, sets: Sequence[EvalSet]) -> dict[str, Any]:
    """Both models' accuracy on every non-empty set."""
    numbers: dict[str, Any] = {}
    for s in sets:
        if len(s) == 0:
            continue
        numbers[s.name] = {
            "n": len(s),
            "champion": round(accuracy(champion, s.texts, s.labels), 4)
            if champion is not None
            else None,
            "challenger": round(accuracy(challenger, s.texts, s.labels), 4),
            "note": s.note,
        }
    return numbers


def decide(numbers: dict[str, Any], tolerances: Tolerances) -> tuple[bool, list[str]]:
    """Whether to publish, and why not (one reason per set that fell behind)."""
    reasons = []
    for name, row in numbers.items():
        if row["champion"] is None:
            continue
        drop = row["champion"] - row["challenger"]
        if drop > tolerances.of(name) + 1e-9:
            reasons.append(
                f"{name}: {row['challenger']:.4f} vs champion {row['champion']:.4f} "
                f"(-{100 * drop:.1f} pt, tolerance {100 * tolerances.of(name):.1f} pt)"
            )
    return not reasons, reasons


def summary(version: str, numbers: dict[str, Any], at: str) -> str:
    """``v0004 since 12:03 UTC, +0.4 pt on feedback`` (the set that moved most)."""
    deltas = {
        name: 100 * (row["challenger"] - row["champion"])
        for name, row in numbers.items()
        if row["champion"] is not None
    }
    text = f"{version} since {at}"
    if deltas:
        name = max(deltas, key=lambda k: abs(deltas[k]))
        text += f", {deltas[name]:+.1f} pt on {name}"
    return text


def label_ids(labels: Sequence[str]) -> np.ndarray:
    return np.array([LABELS.index(label) for label in labels], dtype=np.int64)
