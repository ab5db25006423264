"""The shipped model (models/, what `make run` and the compose images serve) on our hand-written
regression set of 200 single sentences: a version that answers chat messages worse, or leans to
one side, is caught before it ships."""

from __future__ import annotations

import csv

import numpy as np

from shared.config import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME
from shared.store import ModelStore
from tests.conftest import REPO

SENTENCES = REPO / "bench" / "data" / "short_sentences.tsv"


def test_the_shipped_version_on_the_hand_written_sentences() -> None:
    from worker.model.served import explain_reviews, load_served

    with SENTENCES.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 200 and sum(r["label"] == "positive" for r in rows) == 100
    served = load_served(ModelStore(DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME))
    answers = explain_reviews(
        served, [{"id": str(i), "text": r["text"]} for i, r in enumerate(rows)], 3
    )
    labels = np.array([a["label"] == "positive" for a in answers])
    truth = np.array([r["label"] == "positive" for r in rows])
    # v0003 (calibrated v0002): 0.915 and 0.475; v0002: 0.880 and 0.55.
    assert (labels == truth).mean() >= 0.90
    assert 0.44 <= labels.mean() <= 0.56
    flagged = [a for a in answers if a["uncertain"]]
    assert 0 < len(flagged) < len(answers) / 3  # some leanings, mostly verdicts
    assert all(max(a["scores"].values()) < served.calibration.uncertain_below for a in flagged)
