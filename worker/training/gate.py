"""The publishing gate: a challenger against the serving champion, on the same fixed sets.

Three sets, each scored for both models with the same preprocessing the workers apply:

* **test**: the fixed labelled test split (IMDB's 25k test reviews in production);
* **short**: single sentences cut from those test reviews (what chat users send), labelled like
  their review, sampled with a fixed seed (``worker.training.sentences.sentences_from``);
* **feedback**: the votes of voters held out whole (``worker.training.votes``), each voter
  weighing one, however many votes they sent;
* **canary**: labelled texts of the test sets that nobody voted about and that share the votes'
  words, overall and per word (a poisoned "this word is negative" shows there).

The challenger may be published only when, on every set, its accuracy is not below the
champion's by more than that set's tolerance, and on no word of the canary by more than
``canary_word``.  A set marked ``informational`` (the votes the challenger trained on: did it
learn them?) is reported, never decisive: a voter's own votes are no evidence for the model they
shaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.schema import LABELS


@dataclass(frozen=True)
class EvalSet:
    """Labelled texts, and how the set was made (recorded with the decision); optionally a
    weight per text and groups of texts judged on their own."""

    name: str
    texts: list[str]
    labels: np.ndarray
    note: str = ""
    weights: np.ndarray | None = None
    groups: dict[str, list[int]] = field(default_factory=dict)
    informational: bool = False

    def __len__(self) -> int:
        return len(self.texts)


def correct(served: Any, texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """Whether a loaded version (``worker.model.served.Served``) answers each text right, as
    the worker answers them (its calibration applied)."""
    from worker.training.calibrate import answer_probs

    if not texts:
        return np.zeros(0, dtype=bool)
    return np.asarray((answer_probs(served, list(texts)) > 0.5).astype(int) == labels)


def accuracy(served: Any, texts: Sequence[str], labels: np.ndarray) -> float:
    right = correct(served, texts, labels)
    return float(right.mean()) if len(right) else float("nan")


def _score(right: np.ndarray, weights: np.ndarray | None) -> float:
    if weights is None:
        return float(right.mean())
    return float((right * weights).sum() / weights.sum())


@dataclass(frozen=True)
class Tolerances:
    """How far (in accuracy, 0.01 = one point) a challenger may fall behind on each set."""

    test: float = 0.005
    short: float = 0.01
    feedback: float = 0.02
    canary: float = 0.02
    canary_word: float = 0.10

    def of(self, name: str) -> float:
        return float(getattr(self, name))


def compare(champion: Any, challenger: Any, sets: Sequence[EvalSet]) -> dict[str, Any]:
    """Both models' accuracy on every non-empty set (weighted when the set has weights), and
    on each group of ``min_group`` texts or more."""
    from worker.training.votes import CANARY_MIN_GROUP

    numbers: dict[str, Any] = {}
    for s in sets:
        if len(s) == 0:
            continue
        mine = correct(challenger, s.texts, s.labels)
        theirs = correct(champion, s.texts, s.labels) if champion is not None else None
        row: dict[str, Any] = {
            "n": len(s),
            "champion": round(_score(theirs, s.weights), 4) if theirs is not None else None,
            "challenger": round(_score(mine, s.weights), 4),
            "note": s.note,
        }
        if s.weights is not None:
            row["weighted"] = True
        if s.informational:
            row["informational"] = True
        groups = {}
        for word, idx in sorted(s.groups.items()):
            if len(idx) >= CANARY_MIN_GROUP and theirs is not None:
                groups[word] = {
                    "n": len(idx),
                    "champion": round(float(theirs[idx].mean()), 4),
                    "challenger": round(float(mine[idx].mean()), 4),
                }
        if groups:
            row["groups"] = groups
        numbers[s.name] = row
    return numbers


def decide(numbers: dict[str, Any], tolerances: Tolerances) -> tuple[bool, list[str]]:
    """Whether to publish, and why not (one reason per set, or canary word, that fell behind)."""
    reasons = []
    for name, row in numbers.items():
        if row["champion"] is None or row.get("informational"):
            continue
        drop = row["champion"] - row["challenger"]
        if drop > tolerances.of(name) + 1e-9:
            reasons.append(
                f"{name}: {row['challenger']:.4f} vs champion {row['champion']:.4f} "
                f"(-{100 * drop:.1f} pt, tolerance {100 * tolerances.of(name):.1f} pt)"
            )
        for word, group in row.get("groups", {}).items():
            drop = group["champion"] - group["challenger"]
            if drop > tolerances.canary_word + 1e-9:
                reasons.append(
                    f"{name} {word!r}: {group['challenger']:.4f} vs champion "
                    f"{group['champion']:.4f} on {group['n']} texts nobody voted about "
                    f"(-{100 * drop:.1f} pt, tolerance {100 * tolerances.canary_word:.1f} pt)"
                )
    return not reasons, reasons


def summary(version: str, numbers: dict[str, Any], at: str) -> str:
    """``v0004 since 12:03 UTC, +0.4 pt on feedback`` (the set that moved most)."""
    deltas = {
        name: 100 * (row["challenger"] - row["champion"])
        for name, row in numbers.items()
        if row["champion"] is not None and not row.get("informational")
    }
    text = f"{version} since {at}"
    if deltas:
        name = max(deltas, key=lambda k: abs(deltas[k]))
        text += f", {deltas[name]:+.1f} pt on {name}"
    return text


def label_ids(labels: Sequence[str]) -> np.ndarray:
    return np.array([LABELS.index(label) for label in labels], dtype=np.int64)
