import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.text import _tokenize_general, normalize, tokenize


def test_negations_survive_as_single_tokens() -> None:
    assert tokenize("I don't like it, it isn't good and I can't WON'T") == [
        "i",
        "don't",
        "like",
        "it",
        "it",
        "isn't",
        "good",
        "and",
        "i",
        "can't",
        "won't",
    ]


def test_curly_apostrophes_are_folded_before_tokenizing() -> None:
    assert tokenize("It didn’t work") == ["it", "didn't", "work"]


def test_html_breaks_and_tags_become_spaces_not_glue() -> None:
    assert tokenize("Good.<br /><br />Bad<i>ly</i> done") == ["good", "bad", "ly", "done"]


def test_entities_are_decoded_and_escaped_markup_stays_text() -> None:
    assert tokenize("Tom &amp; Jerry &quot;rock&quot;") == ["tom", "jerry", "rock"]
    # An escaped tag written by a user is text, not a tag to remove.
    assert tokenize("&lt;b&gt;bold&lt;/b&gt;") == ["b", "bold", "b"]


def test_clitic_s_is_split_but_other_contractions_are_kept() -> None:
    assert tokenize("The film's score, it's fine, I'm sure") == [
        "the",
        "film",
        "'s",
        "score",
        "it",
        "'s",
        "fine",
        "i'm",
        "sure",
    ]


def test_ratings_and_numbers_are_single_tokens() -> None:
    assert tokenize("7/10, maybe 7.5/10; 1,000 extras in 1999") == [
        "7/10",
        "maybe",
        "7.5/10",
        "1000",
        "extras",
        "in",
        "1999",
    ]


def test_exclamation_and_question_runs_collapse_other_punctuation_drops() -> None:
    assert tokenize("Wow!!! Really??? (yes); ok...") == ["wow", "!", "really", "?", "yes", "ok"]


def test_emoji_are_tokens_and_modifiers_are_dropped() -> None:
    assert tokenize("loved it 😍👍🏽❤️") == ["loved", "it", "😍", "👍", "❤"]


def test_non_english_and_unicode_folding() -> None:
    assert tokenize("Très BIEN, déjà vu") == ["très", "bien", "déjà", "vu"]
    assert tokenize("ＦＵＬＬ width") == ["full", "width"]
    assert tokenize("Straße") == ["strasse"]
    assert tokenize("שלום עולם") == ["שלום", "עולם"]


def test_normalize_lowercases_and_strips_tags() -> None:
    assert normalize("A<br/>B &amp; C") == "a b & c"


@given(st.text(max_size=300))
def test_tokenize_never_fails_and_yields_clean_tokens(text: str) -> None:
    tokens = tokenize(text)
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    assert all(t == t.casefold() for t in tokens)


@given(
    st.text(
        alphabet=st.characters(categories=["L"], exclude_characters="\u02bc"),  # folded to '
        min_size=1,
        max_size=20,
    )
)
def test_a_single_word_is_one_token(word: str) -> None:
    tokens = tokenize(word)
    assert len(tokens) >= 1
    assert "".join(tokens).replace("'s", "s") != ""


@given(st.text(alphabet="abs'!?,.0123456789/ xyz_-<>&;", max_size=60))
def test_the_ascii_fast_path_equals_the_general_rules(text: str) -> None:
    # ASCII text takes a single-regex path; it must give exactly what the general rules give.
    normalized = normalize(text)
    assert normalized.isascii()
    assert tokenize(text) == _tokenize_general(normalized)


def test_the_ascii_fast_path_on_tricky_clitics_and_numbers() -> None:
    for text in ("vampire's's lair", "o'sullivan's", "john's5 1,000,000 2.5/10", "s's 's x'"):
        assert tokenize(text) == _tokenize_general(normalize(text)), text


@given(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=300),
    st.lists(st.integers(0, 300), max_size=6),
)
def test_tokens_cut_by_spans_are_the_texts_tokens(text: str, cuts: list[int]) -> None:
    from shared.text import tokens_by_span

    edges = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    spans = list(itertools.pairwise(edges))
    pieces = tokens_by_span(text, spans)
    if "&" in text:
        assert pieces is None
        return
    if pieces is None:  # a cut inside a token: refused, never wrong
        return
    assert [t for piece in pieces for t in piece] == tokenize(text)


@given(
    st.lists(st.text(alphabet="abs'!?,.019/xyz_-<>;: ", min_size=1, max_size=30), max_size=6),
    st.lists(st.sampled_from([" ", "\n", "\t ", " <br /> ", "<p>", ""]), min_size=7, max_size=7),
)
def test_tokens_of_spans_apart_are_the_texts_tokens(pieces: list[str], seps: list[str]) -> None:
    # Spans with white space (or break tags) between them take the path that does not
    # tokenize the whole text to compare: it must still give exactly the text's tokens.
    from shared.text import tokens_by_span

    text, spans = seps[0], []
    for piece, sep in zip(pieces, seps[1:], strict=False):
        spans.append((len(text), len(text) + len(piece)))
        text += piece + sep
    cut = tokens_by_span(text, spans)
    if cut is not None:
        assert [t for piece in cut for t in piece] == tokenize(text)


def test_tokens_cut_at_white_space_are_each_spans_own() -> None:
    from shared.text import tokens_by_span

    text = "Great film!<br /><br />The 1,000 extras didn't help. Boring's the word"
    spans = [(0, 11), (23, 52), (53, len(text))]
    assert tokens_by_span(text, spans) == [tokenize(text[s:e]) for s, e in spans]
    assert tokens_by_span(text, [(0, 3), (3, len(text))]) is None  # "gre" | "at": refused
