"""Text normalisation and tokenisation shared by training and serving.

``tokenize(text)`` is the single function both the training job and the workers call, so a
model always sees text prepared exactly as it was trained on.  Its settings are recorded in every
model's manifest (``PREPROCESSING``) and checked when a model is loaded.

Choices, in order of application:

1. **HTML residue**: IMDB reviews carry ``<br /><br />`` and other tags; tags are replaced by a
   space (never glued words together), then entities (``&amp;``, ``&#39;``, ``&quot;``) are
   unescaped.  Tags are removed *before* unescaping so that an escaped ``&lt;b&gt;`` written by a
   user stays text.
2. **Unicode**: NFKC folds compatibility forms (full-width letters, ligatures, ``…``); curly
   quotes and the various apostrophes become ``'``; everything is lower-cased with ``casefold``.
   Letters of every script are kept, so non-English words become tokens (and usually map to OOV).
3. **Negations survive**: words keep their internal apostrophes, so ``don't``, ``isn't``,
   ``can't``, ``wouldn't`` are single tokens distinct from ``do``/``is``.  Only the clitic ``'s``
   is split off (``film's`` -> ``film`` ``'s``), which keeps the vocabulary small without losing
   meaning.
4. **Numbers**: a number with an optional ``/denominator`` is one token (``7/10``, ``10/10``,
   ``2.5``): ratings inside reviews are strong evidence and must not be split into ``7`` ``10``.
5. **Punctuation**: dropped, except ``!`` and ``?`` (runs collapse to one token), which carry
   sentiment ("really?", "wow!").  Hyphens and slashes between words split them.
6. **Emoji and other pictographic symbols** (Unicode category ``So``) are kept, one token each.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from itertools import pairwise

#: Version of the rules below; bump it whenever tokenize() changes behaviour.
PREPROCESSING_VERSION = 1

PREPROCESSING = {
    "version": PREPROCESSING_VERSION,
    "lowercase": True,
    "strip_html": True,
    "keep_negations": True,
    "split_clitic_s": True,
    "numbers": "kept, ratings like 7/10 as one token",
    "punctuation": "dropped except ! and ?",
    "emoji": "kept, one token each",
    "unicode": "NFKC",
}

_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]{0,200}>")
_APOSTROPHES = ("\u2019", "\u2018", "\u02bc", "\u00b4")
# Alternatives, in order: numbers (7, 2.5, 1,000, 7/10); words with inner apostrophes (don't,
# rock'n'roll); runs of ! and ?; any other single non-word character (kept only if a symbol).
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:/\d+(?:\.\d+)?)?|[^\W\d_]+(?:'[^\W\d_]+)*|[!?]+|[^\w\s]")


def normalize(text: str) -> str:
    """Return ``text`` with HTML removed, entities decoded, Unicode folded and lower-cased."""
    text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        for apostrophe in _APOSTROPHES:
            if apostrophe in text:
                text = text.replace(apostrophe, "'")
    if "`" in text:
        text = text.replace("`", "'")
    return text.casefold()


# The same rules for ASCII text, done by the regex alone (most reviews; much faster): ASCII
# has no pictographs, so single symbols are never kept; only the first of a run of ! and ? is
# taken; a word stops before a final clitic 's, which is then its own token.
_ASCII_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)*(?:/\d+(?:\.\d+)?)?"
    r"|[a-z]+(?:'(?!s(?![a-z]|'[a-z]))[a-z]+)*"
    r"|(?<=[a-z])'s(?![a-z])"
    r"|(?<![!?])[!?]"
)
_THOUSANDS = re.compile(r"\d,\d")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into the tokens the model is trained and served on."""
    text = normalize(text)
    if text.isascii():
        tokens = _ASCII_TOKEN.findall(text)
        if _THOUSANDS.search(text):
            return [t.replace(",", "") if "," in t else t for t in tokens]
        return tokens  # type: ignore[no-any-return]
    return _tokenize_general(text)


def _same_length_space(match: re.Match[str]) -> str:
    return " " * len(match.group())


def tokens_by_span(text: str, spans: Sequence[tuple[int, int]]) -> list[list[str]] | None:
    """``tokenize(text)`` cut by character spans of ``text``: the tokens inside each span, or
    None when that cannot be done exactly (text that is not ASCII or has entities, where
    normalising moves offsets, or a token that is not inside one span).  Tags become spaces
    of their own length, so offsets in the normalised text are offsets in ``text``."""
    if "&" in text or not text.isascii():
        return None
    norm = _TAG.sub(_same_length_space, text)
    if "`" in norm:
        norm = norm.replace("`", "'")
    norm = norm.casefold()
    pieces = [_ASCII_TOKEN.findall(norm, s, e) for s, e in spans]
    if not _apart(norm, spans) and [t for p in pieces for t in p] != _ASCII_TOKEN.findall(norm):
        return None
    if _THOUSANDS.search(norm):
        pieces = [[t.replace(",", "") if "," in t else t for t in piece] for piece in pieces]
    return pieces


def _apart(norm: str, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether only white space lies between, before and after ``spans`` (and some between
    each two): then no token crosses a span's edge, and the tokens' look-ahead at a span's end
    sees what it would see in the whole text (white space), so the spans' tokens are the
    text's, without tokenizing it whole to compare."""
    if not spans or (spans[0][0] and not norm[: spans[0][0]].isspace()):
        return False
    end = spans[-1][1]
    if end < len(norm) and not norm[end:].isspace():
        return False
    return all(norm[e:s].isspace() for (_, e), (s, _) in pairwise(spans))


def _tokenize_general(text: str) -> list[str]:
    """``tokenize`` for normalised text in any script (the reference for the ASCII path)."""
    tokens: list[str] = []
    append = tokens.append
    for token in _TOKEN.findall(text):
        first = token[0]
        if first.isalpha():  # a word (the common case first)
            if "'" in token and token.endswith("'s") and len(token) > 2:
                append(token[:-2])
                append("'s")
            else:
                append(token)
        elif first == "!" or first == "?":
            append(first)
        elif len(token) == 1 and not (first.isalnum() or first == "_"):
            if unicodedata.category(first) == "So":  # emoji and other pictographs
                append(first)
        elif first.isdecimal():
            append(token.replace(",", "") if "," in token else token)
        elif "'" in token and token.endswith("'s") and len(token) > 2:
            append(token[:-2])
            append("'s")
        else:
            append(token)
    return tokens
