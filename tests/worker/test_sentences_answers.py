"""Per-sentence answers through the served model (the tiny test model): offsets into the text as
sent, each sentence answered exactly as if it were sent alone, the contract checked."""

from __future__ import annotations

from typing import Any

import pytest

from shared.schema import SchemaError, make_payload, validate_result
from worker.model.verdict import VERDICTS, VerdictRule


def _run(served: Any, texts: list[str], sentences: bool = True) -> list[dict[str, Any]]:
    from worker.model.served import explain_reviews

    return explain_reviews(
        served, [{"id": str(i), "text": t} for i, t in enumerate(texts)], 5, sentences=sentences
    )


def test_sentences_are_answered_as_if_alone_with_offsets(tiny_store: Any) -> None:
    from worker.model.served import load_served

    served = load_served(tiny_store)
    text = "A <b>superb</b> film!  Dull, boring plot...<br /><br />Loved it"
    (whole,) = _run(served, [text])
    parts = whole["sentences"]
    assert [text[s["start"] : s["end"]] for s in parts] == [
        "A <b>superb</b> film!",
        "Dull, boring plot...",
        "Loved it",
    ]
    alone = _run(served, [text[s["start"] : s["end"]] for s in parts], sentences=False)
    for part, single in zip(parts, alone, strict=True):
        assert part["label"] == single["label"] and part["scores"] == single["scores"]
        assert part["top_words"] == single["top_words"] and part["reasons"] == single["reasons"]
    assert whole["verdict"] in VERDICTS
    payload = make_payload([("0", text)], 5, sentences=True)
    validate_result({"schema": 3, "model_version": "v", "results": [whole]}, payload)


def test_one_sentence_is_its_own_answer_and_sentences_can_be_left_out(tiny_store: Any) -> None:
    from worker.model.served import load_served

    served = load_served(tiny_store)
    (one,) = _run(served, ["Simply a wonderful film"])
    (sentence,) = one["sentences"]
    assert (sentence["start"], sentence["end"]) == (0, 23)
    assert sentence["label"] == one["label"] and sentence["scores"] == one["scores"]
    (bare,) = _run(served, ["Simply a wonderful film. Dull ending."], sentences=False)
    assert "sentences" not in bare and bare["verdict"] != "mixed"  # the text alone decides


def test_the_contract_refuses_spans_outside_the_text_or_out_of_order() -> None:
    item = {
        "id": "a",
        "label": "positive",
        "scores": {"negative": 0.2, "positive": 0.8},
        "uncertain": False,
        "top_words": [],
        "top_phrases": [],
        "verdict": "positive",
        "reasons": [],
        "sentences": [
            {
                "start": 0,
                "end": 5,
                "label": "positive",
                "scores": {"negative": 0.2, "positive": 0.8},
                "uncertain": False,
                "top_words": [],
                "reasons": [],
                "targets": [],
            },
        ],
        "error": None,
    }
    result = {"schema": 3, "model_version": "v", "results": [item]}
    validate_result(result, make_payload([("a", "Great")], 5, sentences=True))
    with pytest.raises(SchemaError, match="past its review"):
        validate_result(result, make_payload([("a", "Grea")], 5, sentences=True))
    backwards = {**item["sentences"][0], "start": 3, "end": 2}
    with pytest.raises(SchemaError, match="increasing"):
        validate_result({**result, "results": [{**item, "sentences": [backwards]}]})
    with pytest.raises(SchemaError, match="verdict"):
        validate_result({**result, "results": [{**item, "verdict": "meh"}]})


def test_the_threshold_rule_and_a_bad_manifest() -> None:
    from shared.store import StoreError
    from worker.model.verdict import Observed

    rule = VerdictRule()
    assert rule.verdict(Observed(0.3, 1.0, 20, [(0.95, 1.0), (0.02, 1.0)])) == "mixed"
    assert rule.verdict(Observed(0.55, 0.1, 12, [(0.6, 0.1), (0.45, 0.1)])) == "neutral"
    assert rule.verdict(Observed(0.9, 1.0, 12, [(0.9, 1.0), (0.8, 1.0)])) == "positive"
    assert rule.reasons([["the", 2.0], ["superb", 1.5], ["not", 0.9], ["film", 0.1]]) == [
        "superb",
        "not",
    ]
    with pytest.raises(StoreError):
        VerdictRule.from_manifest({"verdict": {"linear": {"coef": [[1.0]]}}})
    with pytest.raises(StoreError):
        VerdictRule.from_manifest({"verdict": {"opinion": 2.0}})
