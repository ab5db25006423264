"""Negation and contrast composed from clauses (worker.model.compose), issue 24.

The words here are none of bench/behaviour.py's evaluation lexicon ("splendid", "dreary",
"gorgeous", "miserable"): the rules are about closed-class words, whatever the opinion words.
"""

from __future__ import annotations

import dataclasses

import pytest

from shared.text import tokenize
from worker.model.compose import CONCEDED, SHIFT, Clause, clauses, compose, opinion_lexicon
from worker.model.ratings import RATING_SCALE, ratings


def _parts(text: str) -> list[tuple[list[str], int, float, int]]:
    tokens = tokenize(text)
    parts = clauses(text, tokens)
    assert parts is not None, text
    return [(tokens[p.start : p.end], len(p.negators), round(p.weight, 3), p.denies) for p in parts]


def test_a_text_without_negators_or_contrast_words_is_left_to_the_model() -> None:
    for text in ("The cast was splendid.", "Dreary. Tedious. Two hours lost.", "Yet"):
        assert clauses(text, tokenize(text)) is None


def test_the_clause_after_but_however_yet_wins_and_a_concessive_clause_concedes_itself() -> None:
    third = round(CONCEDED, 3)
    assert _parts("The plot was dreary, but the cast was splendid.") == [
        (["the", "plot", "was", "dreary"], 0, third, -1),
        (["but", "the", "cast", "was", "splendid"], 0, 1.0, -1),
    ]
    assert _parts("The plot was dreary but the cast was splendid")[0][2] == third  # no comma
    assert _parts("The plot was dreary; however, the cast was splendid.")[0][2] == third
    assert _parts("The set was dull, yet I enjoyed it.")[0][2] == third
    assert [p[2] for p in _parts("Although the plot was dreary, the cast was splendid.")] == [
        third,
        1.0,
    ]
    assert [p[2] for p in _parts("The cast was splendid, though the plot was dreary.")] == [
        1.0,
        third,
    ]


def test_but_and_yet_that_do_not_contrast() -> None:
    for text in (
        "Not only was the cast splendid, but the plot was also gripping.",
        "Nothing but praise for this cast.",
        "Yet another dreary sequel.",
        "The best yet.",
    ):
        assert clauses(text, tokenize(text)) is None, text  # the model's own answer


def test_negators_that_reverse_and_those_that_do_not() -> None:
    assert _parts("The cast was not splendid.")[0][1] == 1
    assert _parts("I didn't find it dreary.")[0][1] == 1
    assert _parts("It is not true that the cast was not splendid.")[0][1] == 2  # even: cancel
    for idiom in (
        "No wonder it flopped.",
        "I have never seen such a splendid cast.",
        "I can't praise it enough.",
        "Don't waste your money.",
        "Not only splendid but cheap.",
    ):
        assert clauses(idiom, tokenize(idiom)) is None, idiom


def test_a_negator_reverses_the_opinion_words_of_its_scope() -> None:
    def flipped(text: str) -> list[str]:
        tokens = tokenize(text)
        parts = clauses(text, tokens)
        return [tokens[i] for p in parts or [] for i, _ in p.flips]

    assert {"splendid", "gorgeous", "dreary"} <= set(opinion_lexicon())
    assert flipped("The cast was not splendid.") == ["splendid"]
    assert flipped("Not a single dreary minute.") == ["dreary"]  # "single" is no opinion
    assert flipped("It was not the splendid, gorgeous evening we hoped for.") == ["splendid"]
    assert flipped("It never loses its charm.") == ["loses"]  # the next opinion word only
    # A neg-raising verb passes its negation to the clause it takes.
    assert flipped("I don't think the new cast is splendid.") == ["splendid"]
    assert flipped("I can't say I didn't like it.") == []  # two negations cancel


def test_an_elliptical_denial_reverses_the_clause_before_it() -> None:
    parts = _parts("I expected it to be dreary, but it wasn't.")
    assert parts[1] == (["but", "it", "wasn't"], 1, 1.0, 0) and parts[0][2] == 0.0
    parts = _parts("Everyone praised the plot. It was not.")
    assert parts[1][3] == 0 and parts[0][2] == 0.0  # the denial says it, reversed


def test_ratings_written_as_numbers_are_the_writers_score() -> None:
    def scores(text: str) -> list[float]:
        return [round(z / RATING_SCALE, 2) for _, z in ratings(tokenize(text))]

    assert scores("I'd give it 9/10.") == [0.8]
    assert scores("4.5/5, would order again") == [0.8]
    assert scores("Three out of ten.") == [-0.4]
    assert scores("2 out of 10, sadly") == [-0.6]
    assert scores("One star. Five stars for the old one.") == [-0.6, 1.0]
    assert scores("12/10") == scores("out of stock") == scores("7 out of 9") == []
    # The clause holding the rating is answered by it, whatever its words say.
    parts = clauses("Lovely staff, but 2/10.", tokenize("Lovely staff, but 2/10."))
    assert parts is not None and parts[1].rating == pytest.approx(-0.6 * RATING_SCALE)
    out = compose([1.0, 0.2, 0.0, 0.4], parts)
    assert out[2:] == [0.0, pytest.approx(-0.6 * RATING_SCALE)] and sum(out) < 0
    parts = clauses("Two out of ten.", tokenize("Two out of ten."))
    assert parts is not None
    assert compose([0.3, 0.0, 0.0, 0.1], parts) == [-0.6 * RATING_SCALE, 0.0, 0.0, 0.0]


def test_what_looks_like_a_rule_but_is_not() -> None:
    def parts(text: str) -> list[Clause]:
        got = clauses(text, tokenize(text))
        return got or []

    # A tag question is no denial; a denial may end with "!".
    assert all(p.denies < 0 for p in parts("The food was splendid, wasn't it."))
    assert parts("I expected to hate it, but I didn't!")[1].denies == 0
    # A superlative experience, "couldn't be happier", amazement: no reversal.
    for text in (
        "I don't think I've ever had a more dreary lunch.",
        "Couldn't be happier with this kettle.",
        "I have never been happier.",
        "I can't believe how splendid it was!",
    ):
        assert all(not p.flips for p in parts(text)), text
    assert all(p.weight == 1.0 for p in parts("I had no choice but to return it."))
    # A negated rating is reversed; stars in a cast are no rating.
    assert [p.rating for p in parts("Not 10/10.")] == [-RATING_SCALE]
    assert parts("I would not give it 5 stars.")[0].rating == -RATING_SCALE
    assert ratings(tokenize("The film has 2 stars in it and both are splendid.")) == []


def test_composed_weights_reverse_a_negated_clause_and_weigh_a_conceded_one() -> None:
    # "the plot was dreary , but the cast was not splendid": tokens 0-3, 4-9 (negator at 8).
    parts = [Clause(0, 4, (), CONCEDED), Clause(4, 10, (8,), 1.0, flips=((9, 1.0),))]
    own = [0.0, 0.1, 0.0, -2.0, 0.0, 0.0, 0.1, 0.0, -0.3, 1.5]
    out = compose(own, parts)
    assert out[:4] == pytest.approx([w * CONCEDED for w in own[:4]])
    assert out[4:9] == own[4:9]  # words that are no opinion, and the negator, as read
    assert out[9] == pytest.approx(-SHIFT * 1.5)
    assert sum(out) < 0  # dreary, and not splendid either


def test_a_word_the_model_already_read_as_negated_is_not_reversed_again() -> None:
    parts = [Clause(0, 2, (0,), 1.0, flips=((1, -1.0),))]  # "no problems": a negative word
    assert compose([0.3, 1.2], parts) == [0.3, 1.2]  # the model knows the phrase: positive
    assert compose([0.3, -1.2], parts) == [0.3, pytest.approx(1.2 * SHIFT)]  # it missed "no"


def test_two_negations_cancel_and_so_do_their_weights() -> None:
    # "i can't say i didn't like it": negators at 1 and 4
    parts = [Clause(0, 7, (1, 4), 1.0)]
    own = [0.0, -0.6, 0.1, 0.0, -0.7, 0.4, 0.0]
    assert compose(own, parts) == [0.0, 0.0, 0.1, 0.0, 0.0, 0.4, 0.0]


def test_a_denial_takes_the_reversed_answer_of_the_clause_it_denies() -> None:
    parts = [Clause(0, 3, (), 0.0), Clause(3, 5, (4,), 1.0, denies=0)]
    own = [0.0, 0.0, 2.0, 0.0, 0.5]  # "it seemed splendid | it wasn't"
    out = compose(own, parts)
    assert out[4] == pytest.approx(-SHIFT * 2.0) and out[:4] == [0.0] * 4
    assert sum(out) < 0
    assert compose([0.0, 0.0, 0.2, 0.0, 0.5], parts)[4] == 0.5 * 1.0  # nothing to deny


def test_the_composed_weights_still_add_up_to_the_log_odds_less_the_same_bias(
    served,  # type: ignore[no-untyped-def]
) -> None:
    from worker.model.compose import recompose

    texts = [
        "The soundtrack was not gorgeous.",
        "Although the plot was dreary, the cast was splendid.",
        "I expected it to be dreary, but it wasn't.",
        "Lovely staff, but 2/10.",
        "I can't say I didn't like it.",
    ]
    encoded = served.predictor.encode(texts)
    before = served.explainer.explain_ids([e.ids for e in encoded])
    after = list(before)
    assert recompose(texts, encoded, after, 5) == set(range(len(texts)))

    def bias(e) -> float:  # type: ignore[no-untyped-def]
        sign = 1.0 if e.label == "positive" else -1.0
        return e.log_odds - sign * sum(e.token_weights)

    for b, a in zip(before, after, strict=True):
        assert bias(a) == pytest.approx(bias(b), abs=1e-9)
        assert a.log_odds != b.log_odds


@pytest.fixture(scope="module")
def served():  # type: ignore[no-untyped-def]
    from shared.config import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME
    from shared.store import ModelStore
    from worker.model.served import load_served

    return load_served(ModelStore(DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME))


def _answers(served, texts: list[str]) -> list[dict]:  # type: ignore[no-untyped-def]
    from worker.model.served import explain_reviews

    return explain_reviews(served, [{"id": str(i), "text": t} for i, t in enumerate(texts)], 5)


def test_the_shipped_version_reverses_negated_opinions_and_lets_the_last_clause_win(
    served,  # type: ignore[no-untyped-def]
) -> None:
    plain = _answers(served, ["The soundtrack was gorgeous.", "The soundtrack was dreary."])
    assert [a["label"] for a in plain] == ["positive", "negative"]
    negated = _answers(
        served, ["The soundtrack was not gorgeous.", "The soundtrack was not dreary."]
    )
    assert negated[0]["label"] == "negative" and "not" in negated[0]["reasons"]
    assert negated[1]["label"] == "positive"
    contrast = _answers(
        served,
        [
            "The soundtrack was dreary, but the story was gorgeous.",
            "The soundtrack was gorgeous, but the story was dreary.",
        ],
    )
    assert [a["label"] for a in contrast] == ["positive", "negative"]
    # Off, the model alone reads the negated texts like the plain ones.
    alone = dataclasses.replace(served, composed=False)
    assert [a["label"] for a in _answers(alone, ["The soundtrack was not gorgeous."])] == [
        "positive"
    ]


def test_a_word_outside_the_lexicon_is_an_opinion_word_when_the_model_weighs_it_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.model import compose as module

    text = "The finale wasn't marvellous."  # "marvellous": not in VADER's (American) lexicon
    tokens = tokenize(text)
    assert "marvellous" not in opinion_lexicon()
    monkeypatch.setattr(module, "POLAR", 0.5)
    strong = clauses(text, tokens, {"marvellous": 1.4})
    assert strong is not None and strong[0].flips == ((tokens.index("marvellous"), 1.0),)
    weak = clauses(text, tokens, {"marvellous": 0.2})  # too weak alone to be an opinion
    assert weak is None or not weak[0].flips
    dull = "The finale wasn't tedious."
    negative = clauses(dull, tokenize(dull), {"tedious": -1.2})
    assert negative is not None and negative[0].flips[0][1] == -1.0
    # after a negator of a thing, what follows is what is missing, not an opinion
    absent = "Still no refund after three weeks."
    found = clauses(absent, tokenize(absent), {"refund": -0.9})
    assert found is None or not found[0].flips
    # and a word the model leans on is taken within SCOPE only, not to the end of a neg-raising
    # clause (where only VADER's words reach)
    far = "I don't think that the finale was marvellous."
    found = clauses(far, tokenize(far), {"marvellous": 1.4})
    assert found is None or not found[0].flips
    monkeypatch.setattr(module, "POLAR", 0.0)  # off: VADER's words only
    off = clauses(text, tokens, {"marvellous": 1.4})
    assert off is None or not off[0].flips


def test_the_lexicon_prior_adds_valence_reversed_in_scope_and_conceded_with_its_clause() -> None:
    # "the soup was cold , but not rude": a prior on "rude" (reversed) and on a conceded clause
    parts = [Clause(0, 4, (), CONCEDED), Clause(4, 7, (5,), 1.0, flips=((6, -1.0),))]
    own = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    prior = [0.0, 0.0, 0.0, -0.4, 0.0, 0.0, -0.7]
    out = compose(own, parts, prior)
    assert out[3] == pytest.approx(-0.4 * CONCEDED)
    assert out[6] == pytest.approx(0.7 * SHIFT)  # "not rude": the prior reversed
    assert compose(own, parts) == [0.0] * 7  # no prior: the model's (zero) weights


def test_the_prior_changes_a_plain_short_text_but_does_not_mark_it_composed(
    served,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from worker.model import compose as module

    texts = ["We regretted the soup."]
    encoded = served.predictor.encode(texts)
    plain = served.explainer.explain_ids([e.ids for e in encoded])
    monkeypatch.setattr(module, "PRIOR", 0.3)
    after = list(plain)
    assert module.recompose(texts, encoded, after, 5, served.polarity()) == set()
    assert after[0].log_odds < plain[0].log_odds  # "regretted": -1.6 in VADER
    assert "regretted" in [w for w, _ in after[0].top_words]


def test_the_models_own_reading_of_a_word_is_its_short_text_bags_weight(served) -> None:  # type: ignore[no-untyped-def]
    from worker.model.cnn import CROP_BAG_LAYER

    polarity = served.polarity()
    table = served.predictor.model.get_layer(CROP_BAG_LAYER).get_weights()[0]
    vocab = served.predictor.vocab
    assert len(polarity) == len(vocab)
    for word in ("tedious", "flawless", "the"):
        assert polarity[word] == pytest.approx(float(table[vocab.id_of(word)]))
    assert polarity["tedious"] < -0.3 < 0.3 < polarity["flawless"]
    assert served.polarity() is polarity  # built once per model
