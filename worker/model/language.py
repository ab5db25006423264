"""Which language a review is in, so a review the model cannot read is said, not guessed.

The model reads English.  A review in another language still gets a label from it (a German
review is mostly unknown words, and the few it knows decide): that label is noise.  Each answer
carries ``language`` (ISO 639-1: ``"en"``, ``"de"``, ...); an answer in another language is
``uncertain`` and says so, and the bot answers that it reads English only.

How it is decided, cheaply and without flagging English:

1. A text whose tokens are mostly in the version's vocabulary is English: with 30,000 words of
   English reviews, English text has few unknown tokens (IMDB reviews ~3%), German or French
   a third to three quarters, Russian or Chinese all.  Such text never reaches the detector,
   so English reviews pay nothing for it.
2. Otherwise **py3langid** names the language: langid.py (Lui & Baldwin, 2012; 97 languages)
   as a maintained package whose model is inside its wheel (4.6 MB, numpy only; nothing is
   downloaded).  It is unsure on very short text ("meh", "Wow" come out Sesotho or Polish at a
   few percent), so its answer counts only when it is probable enough, or when nearly every
   token is unknown in a text that is not ASCII (another script; made-up or slang English
   words, "Zorblax quibbleflop", stay English).

The thresholds were chosen on ``bench/data/languages-tune.tsv`` (hand-written sentences in 14
languages and English) and IMDB validation sentences; ``bench/languages.py`` measures them on a
separate set, ``bench/data/languages-eval.tsv``, and on IMDB test sentences.
"""

from __future__ import annotations

import threading
from typing import Any

ENGLISH = "en"
#: Under this share of tokens outside the vocabulary a text is English, without asking.
MIN_UNKNOWN_SHARE = 0.3
#: The detector's probability (normalised over its 97 languages) that counts.
MIN_PROBABILITY = 0.5
#: A text in another script (not ASCII) with at least this share of unknown tokens takes any
#: non-English answer; in ASCII, unknown words are as likely slang, names or made-up words.
NEARLY_ALL_UNKNOWN = 0.8
#: Characters the detector reads (the start of a long review tells its language).
READ_CHARS = 1000

_LOCK = threading.Lock()
_IDENTIFIER: Any = None


def _identifier() -> Any:
    """py3langid's identifier with normalised probabilities, loaded once (about 0.8 s)."""
    global _IDENTIFIER
    with _LOCK:
        if _IDENTIFIER is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


def load() -> None:
    """Load the detector now (a worker at start-up), not when the first review that needs it
    arrives: its 0.6-0.8 s would otherwise land on that user's answer."""
    _identifier()


def language_of(text: str, n_tokens: int, unknown: int) -> str:
    """The language of ``text`` (ISO 639-1), given its token count and how many of its
    tokens the version does not know."""
    if n_tokens <= 0:
        return ENGLISH  # nothing to read either way: the model's answer already says so
    share = unknown / n_tokens
    if share < MIN_UNKNOWN_SHARE:
        return ENGLISH
    lang, probability = _identifier().classify(text[:READ_CHARS])
    return str(lang) if named(text, share, lang, probability) else ENGLISH


def named(
    text: str,
    share: float,
    lang: str,
    probability: float,
    min_share: float = MIN_UNKNOWN_SHARE,
    min_probability: float = MIN_PROBABILITY,
) -> bool:
    """Whether the detector's answer (``lang`` at ``probability``) names ``text``'s language,
    given its share of unknown tokens (the thresholds are parameters for ``bench/languages.py
    --tune``)."""
    if share < min_share or lang == ENGLISH:
        return False
    other_script = share >= NEARLY_ALL_UNKNOWN and not text.isascii()
    return probability >= min_probability or other_script
