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
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_TOKEN = re.compile(
    r"""
      (?P<num>\d+(?:[.,]\d+)*(?:/\d+(?:\.\d+)?)?)      # 7, 2.5, 1,000, 7/10
    | (?P<word>[^\W\d_]+(?:'[^\W\d_]+)*)               # words, don't, rock'n'roll
    | (?P<punct>[!?]+)                                 # ! and ? runs
    | (?P<other>[^\w\s])                               # anything else: kept only if emoji-like
    """,
    re.VERBOSE,
)


def normalize(text: str) -> str:
    """Return ``text`` with HTML removed, entities decoded, Unicode folded and lower-cased."""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_APOSTROPHES)
    return text.casefold()


def _is_symbol(char: str) -> bool:
    return unicodedata.category(char) == "So"


def tokenize(text: str) -> list[str]:
    """Split ``text`` into the tokens the model is trained and served on."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(normalize(text)):
        kind = match.lastgroup
        value = match.group()
        if kind == "word":
            if value.endswith("'s") and len(value) > 2:
                tokens.append(value[:-2])
                tokens.append("'s")
            else:
                tokens.append(value)
        elif kind == "num":
            tokens.append(value.replace(",", ""))
        elif kind == "punct":
            tokens.append(value[0])
        elif _is_symbol(value):
            tokens.append(value)
    return tokens
