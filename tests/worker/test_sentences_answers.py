"""Per-sentence answers through the served model (the tiny test model): offsets into the text as
sent, each sentence's share of its review's answer, the contract checked."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shared.schema import SchemaError, make_payload, validate_result
from shared.text import tokenize
from worker.model.verdict import VERDICTS, VerdictRule


def _run(served: Any, texts: list[str], sentences: bool = True) -> list[dict[str, Any]]:
    from worker.model.served import explain_reviews

    return explain_reviews(
        served, [{"id": str(i), "text": t} for i, t in enumerate(texts)], 5, sentences=sentences
    )


def test_sentences_carry_their_share_of_the_reviews_answer(tiny_store: Any) -> None:
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
    words = [set(tokenize(text[s["start"] : s["end"]])) for s in parts]
    for part, own in zip(parts, words, strict=True):
        assert {w for w, _ in part["top_words"]} <= own  # a sentence's words are its own
        assert part["read"] and part["label"] == max(part["scores"], key=part["scores"].get)
        oriented = [v for _, v in part["top_words"]]
        assert oriented == sorted(oriented, key=abs, reverse=True)
    assert whole["verdict"] in VERDICTS
    payload = make_payload([("0", text)], 5, sentences=True)
    validate_result({"schema": 3, "model_version": "v", "results": [whole]}, payload)
    # The same review with its sentences answered or not: the review's own answer is the same.
    (bare,) = _run(served, [text], sentences=False)
    assert bare["scores"] == whole["scores"] and bare["top_words"] == whole["top_words"]


def test_shares_add_up_and_opposite_sentences_take_opposite_sides(tiny_store: Any) -> None:
    from worker.model.served import explain_reviews, load_served

    served = load_served(tiny_store)
    text = "A superb, wonderful film. A dull, boring, awful plot."
    (answer,) = explain_reviews(
        served, [{"id": "x", "text": text}], 5, sentences=True, observe=True
    )
    good, bad = answer["sentences"]
    assert good["label"] == "positive" and bad["label"] == "negative"
    shares = answer["sentence_log_odds"]
    whole = math.log(answer["scores"]["positive"] / answer["scores"]["negative"])
    assert shares[0] > 0 > shares[1] and math.copysign(1, sum(shares)) == math.copysign(1, whole)


def test_a_truncated_review_says_which_sentences_were_not_read(tiny_store: Any) -> None:
    from worker.model.served import load_served

    served = load_served(tiny_store)
    filler = " ".join(f"Sentence {i} has a few plain words in it." for i in range(200))
    (answer,) = _run(served, [f"Superb film. {filler} Awful ending."])
    assert answer["truncated"]
    read = [s["read"] for s in answer["sentences"]]
    assert read[0] and read[-1] and not all(read)
    for s in answer["sentences"]:
        if not s["read"]:
            assert s["scores"]["positive"] == 0.5 and s["top_words"] == []


def test_a_review_whose_tokens_cross_its_sentences_is_answered_sentence_by_sentence(
    tiny_store: Any,
) -> None:
    from worker.model.sentences import split
    from worker.model.served import load_served

    served = load_served(tiny_store)
    text = "Superb film <i\n> awful </i> ending. Loved it, café."  # not ASCII: no offsets
    assert split(text).tokens is None  # a tag cut by the line break: tokens differ
    (answer,) = _run(served, [text])
    assert len(answer["sentences"]) >= 2 and all(s["read"] for s in answer["sentences"])
    assert answer["sentences"][-1]["end"] <= len(text)


def test_one_sentence_is_its_own_answer_and_sentences_can_be_left_out(tiny_store: Any) -> None:
    from worker.model.served import load_served

    served = load_served(tiny_store)
    (one,) = _run(served, ["Simply a wonderful film"])
    (sentence,) = one["sentences"]
    assert (sentence["start"], sentence["end"]) == (0, 23)
    assert sentence["label"] == one["label"] and sentence["scores"] == one["scores"]
    texts = ["Simply a wonderful film. Dull ending.", "Superb acting!  Awful, dull plot."]
    bare = _run(served, texts, sentences=False)
    full = _run(served, texts)
    assert all("sentences" not in b and "about" not in b for b in bare)
    # The verdict reads the sentences either way: the same answer whatever is shown.
    for b, f in zip(bare, full, strict=True):
        assert {k: v for k, v in f.items() if k not in ("sentences", "about")} == b


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
    validate_result({**result, "results": [{**item, "language": "de"}]})
    for bad_language in ("german!", "", 7, None, "e"):
        with pytest.raises(SchemaError, match="language"):
            validate_result({**result, "results": [{**item, "language": bad_language}]})
    sentence = item["sentences"][0]
    second = {**sentence, "start": 6, "end": 9}

    def with_sentences(*changed: dict[str, Any]) -> dict[str, Any]:
        return {**result, "results": [{**item, "sentences": list(changed)}]}

    # Numbers are checked over all the sentences' top words at once: any bad one is refused.
    fine = [["ok", 1.5], ["big", 1e308], ["also big", 1e308], ["int", 2]]
    validate_result(with_sentences(sentence, {**second, "top_words": fine}))
    for bad in (math.nan, math.inf, -math.inf, True, "1", None):
        words = [["ok", 0.5], ["bad", bad]]
        with pytest.raises(SchemaError, match="top_words"):
            validate_result(with_sentences(sentence, {**second, "top_words": words}))
    with pytest.raises(SchemaError, match="top_words"):  # inf and -inf do not cancel out
        words = [["a", math.inf], ["b", -math.inf]]
        validate_result(with_sentences(sentence, {**second, "top_words": words}))
    for field in ("start", "end", "label", "scores", "uncertain", "top_words", "reasons"):
        broken = {k: v for k, v in second.items() if k != field}
        with pytest.raises(SchemaError, match="every sentence needs"):
            validate_result(with_sentences(sentence, broken))
    for field, value, message in (
        ("reasons", ["ok", 3], "lists of words"),
        ("targets", "battery", "lists of words"),
        ("top_words", [["a", 1.0, 2.0]], "top_words"),
        ("top_words", [[1, 1.0]], "top_words"),
        ("scores", {"positive": 1.0}, "both classes"),
        ("uncertain", 0, "true or false"),
        ("read", "yes", "true or false"),
        ("scores", {"negative": "lots", "positive": 0.5}, "probabilities"),
        ("scores", {"negative": math.nan, "positive": 0.5}, "probabilities"),
        ("scores", {"negative": 6.0, "positive": 1.0}, "probabilities"),
        ("scores", {"negative": -0.5, "positive": 1.5}, "probabilities"),
        ("label", "meh", "label"),
        ("start", 4, "increasing"),
        ("start", 6.0, "increasing"),
    ):
        with pytest.raises(SchemaError, match=message):
            validate_result(with_sentences(sentence, {**second, field: value}))
    with pytest.raises(SchemaError, match="every sentence needs"):
        validate_result(with_sentences(sentence, "not a sentence"))  # type: ignore[arg-type]
    nan_scores = {**item, "scores": {"negative": math.nan, "positive": 0.5}}
    with pytest.raises(SchemaError, match="probabilities"):
        validate_result({**result, "results": [nan_scores]})
    asked = make_payload([("a", "Great")], 5, sentences=True)
    with pytest.raises(SchemaError, match="asked for"):
        validate_result({**result, "results": [{**item, "sentences": []}]}, asked)


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


def test_reasons_do_not_depend_on_how_many_top_words_are_shown(tiny_store: Any) -> None:
    from worker.model.served import explain_reviews, load_served

    served = load_served(tiny_store)
    texts = ["A wonderful, superb film. Dull and boring ending.", "Loved it, a superb film!"]
    payload = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    shown = {k: explain_reviews(served, payload, k, sentences=True) for k in (0, 1, 10)}
    for k, answers in shown.items():
        for answer, full in zip(answers, shown[10], strict=True):
            assert len(answer["top_words"]) <= k and len(answer["top_phrases"]) <= k
            assert answer["reasons"] == full["reasons"] and answer["against"] == full["against"]
            assert [s["reasons"] for s in answer["sentences"]] == [
                s["reasons"] for s in full["sentences"]
            ]
            # A verdict for one side never contradicts the label.
            assert answer["verdict"] not in ("positive", "negative") or (
                answer["verdict"] == answer["label"]
            )
    assert any(a["reasons"] for a in shown[0])
