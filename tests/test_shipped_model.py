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


def test_the_shipped_version_answers_per_sentence_with_four_verdicts() -> None:
    """The issue's examples and the evaluation set (bench/data/verdicts.jsonl, built from the
    test split, never fitted on): macro-F1 of the verdict at least 0.70."""
    from bench.verdicts import evaluate, load_set
    from worker.model.served import explain_reviews, load_served

    served = load_served(ModelStore(DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME))
    assert served.rule.fitted
    texts = [
        "The acting was superb and the music is gorgeous. The plot, however, made no sense and "
        "the ending was awful.",
        "The movie starts at 8pm. The cinema is on Main Street.",
        "A wonderful film. I loved every minute of it.",
    ]
    mixed, neutral, positive = explain_reviews(
        served, [{"id": str(i), "text": t} for i, t in enumerate(texts)], 10, sentences=True
    )
    spans = [(s["start"], s["end"]) for s in mixed["sentences"]]
    assert spans == [(0, 48), (49, 107)]
    assert mixed["verdict"] == "mixed"
    assert [s["label"] for s in mixed["sentences"]] == ["positive", "negative"]
    assert mixed["about"] == {"positive": ["acting", "music"], "negative": ["plot", "ending"]}
    assert neutral["verdict"] == "neutral" and len(neutral["sentences"]) == 2
    assert positive["verdict"] == "positive"
    assert [s["label"] for s in positive["sentences"]] == ["positive", "positive"]
    # Readers see the words that carry the evidence, never "the", "was", "is".
    assert "superb" in mixed["sentences"][0]["reasons"] and "awful" in mixed["reasons"]
    assert not {"the", "was", "is"} & {w for r in (mixed, positive) for w in r["reasons"]}
    result = evaluate(served, load_set())
    assert result["macro_f1"] >= 0.70, result


def test_the_shipped_version_says_which_reviews_are_not_in_english() -> None:
    """bench/data/languages-eval.tsv (never used to choose the thresholds): reviews in 15
    languages are flagged with their language and uncertain, sentences too; English is not."""
    from worker.model.served import explain_reviews, load_served

    rows = [
        line.split("\t", 1)
        for line in (REPO / "bench" / "data" / "languages-eval.tsv")
        .read_text(encoding="utf-8")
        .splitlines()
    ]
    served = load_served(ModelStore(DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME))
    answers = explain_reviews(
        served, [{"id": str(i), "text": t} for i, (_, t) in enumerate(rows)], 3, sentences=True
    )
    foreign = [(lang, a) for (lang, _), a in zip(rows, answers, strict=True) if lang != "en"]
    english = [a for (lang, _), a in zip(rows, answers, strict=True) if lang == "en"]
    assert len({lang for lang, _ in foreign}) >= 5
    named = [a for lang, a in foreign if a["language"] == lang]
    assert len(named) >= 0.9 * len(foreign)
    assert all(a["language"] in (lang, "en") for lang, a in foreign)  # never a wrong name
    for a in named:
        assert a["uncertain"] and all(s["uncertain"] for s in a["sentences"])
    assert sum(a["language"] != "en" for a in english) <= 0.05 * len(english)
    # Made-up or slang English words are unknown too, but not another language.
    odd = ["Zorblax quibbleflop snarfwidget glimmertoad.", "Lit af fam, no cap", "Zzzz"]
    answers = explain_reviews(served, [{"id": t, "text": t} for t in odd], 3)
    assert [a["language"] for a in answers] == ["en"] * len(odd)
