"""The sentence splitter on what reviews contain: our own set of tricky splits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.sentences import MAX_SENTENCES, sentence_spans
from shared.text import tokenize

# (review, its sentences as the splitter must cut them), written and checked by hand.
TRICKY = [
    ("One sentence with no final punctuation", ["One sentence with no final punctuation"]),
    ("Great.", ["Great."]),
    (
        "The acting was superb and the music is gorgeous. The plot, however, made no sense and "
        "the ending was awful.",
        [
            "The acting was superb and the music is gorgeous.",
            "The plot, however, made no sense and the ending was awful.",
        ],
    ),
    (
        "Dr. Smith and Mr. Jones were great, e.g. in the 2nd act. But it dragged.",
        ["Dr. Smith and Mr. Jones were great, e.g. in the 2nd act.", "But it dragged."],
    ),
    (
        "I rated it 7.5/10. The U.S. version is better.",
        ["I rated it 7.5/10.", "The U.S. version is better."],
    ),
    ("Loved it!!! Would watch again.", ["Loved it!!!", "Would watch again."]),
    ("Loved it ❤️ Hated the end", ["Loved it ❤️", "Hated the end"]),  # emoji + selector
    ("⭐⭐⭐⭐⭐ Would buy again", ["⭐⭐⭐⭐⭐", "Would buy again"]),
    (
        "Service was slow though… Would not return.",
        ["Service was slow though…", "Would not return."],
    ),
    ("Great.\rAwful sound.", ["Great.", "Awful sound."]),  # a lone carriage return
    (
        "Gave it 8/10 (the 2nd half drags) Overall good",
        ["Gave it 8/10 (the 2nd half drags) Overall good"],
    ),
    ("Why?! Just why... Awful.", ["Why?!", "Just why...", "Awful."]),
    ("It was... fine, I guess.", ["It was... fine, I guess."]),
    (
        "Saw it at 8 p.m. on Main St. with my wife.<br /><br />It was dull",
        ["Saw it at 8 p.m. on Main St. with my wife.", "It was dull"],
    ),
    ("First paragraph<br/>second paragraph", ["First paragraph", "second paragraph"]),
    ("Line one\nLine two\r\nLine three", ["Line one", "Line two", "Line three"]),
    ("Great film :) The cast shines.", ["Great film :)", "The cast shines."]),
    ("Not good :( Avoid it.", ["Not good :(", "Avoid it."]),
    ("Wonderful 😀 Loved the cast.", ["Wonderful 😀", "Loved the cast."]),
    ("  padded text.   ", ["padded text."]),
    ("Ok. :)", ["Ok. :)"]),
    ("Best film ever!!!!!! 10/10", ["Best film ever!!!!!! 10/10"]),  # a rating stays with it
    ("It costs $4.99 at Walmart. Worth it.", ["It costs $4.99 at Walmart.", "Worth it."]),
    ("<p>Tagged.</p><p>Twice.</p>", ["Tagged.", "Twice."]),
    ("Fin. ...", ["Fin. ..."]),
    ("Voilà, un très bon film. Magnifique !", ["Voilà, un très bon film.", "Magnifique !"]),
]


@pytest.mark.parametrize(("text", "expected"), TRICKY, ids=[t[:30] for t, _ in TRICKY])
def test_tricky_splits(text: str, expected: list[str]) -> None:
    assert [text[s:e] for s, e in sentence_spans(text)] == expected


def test_a_long_review_is_capped_and_still_covered_to_its_end() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    spans = sentence_spans(text)
    assert len(spans) == MAX_SENTENCES
    assert (
        spans[-1][1] == len(text)
        and text[spans[0][0] : spans[0][1]] == "Sentence number 0 is here."
    )


@given(st.text(max_size=400))
def test_spans_are_ordered_readable_and_inside_the_text(text: str) -> None:
    spans = sentence_spans(text)
    assert all(0 <= s < e <= len(text) for s, e in spans)
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
    if len(spans) > 1:  # several sentences only when each has something to read
        assert all(tokenize(text[s:e]) for s, e in spans)
    if tokenize(text):
        assert spans
