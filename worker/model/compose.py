"""Negation, contrast and ratings in a short text, composed from the model's own token weights.

A network trained on whole reviews reads "not great" much like "great", and "awful, but the
ending was superb" as the sum of both (``bench/behaviour.py``: 75-100% failures on negation and
contrast).  These are closed-class words, so a short text (at most ``SHORT_TOKENS`` tokens: what
people send a bot) that holds one has its clauses' token weights recombined, in the manner
of the *contextual valence shifters* of Polanyi & Zaenen (2006) as SO-CAL (Taboada et al.
2011) and VADER (Hutto & Gilbert 2014) apply them; the model still judges every word:

* **clauses**: the text is cut at sentence ends, ``, ; :`` and dashes, and before "but",
  "however", "nevertheless", "nonetheless" and a clause-initial "yet";
* **contrast**: a clause opened by one of those concedes every clause before it, and a clause
  opened by "although", "though", "even though" or "whereas" concedes itself: a conceded
  clause counts ``CONCEDED`` of its weight (VADER weighs it a third; the tuning set, less);
* **negation**: in a clause with an odd number of negators ("not", "n't", "never", "no",
  "nothing", "without", "hardly", ...), the first opinion word after the first negator
  (within ``SCOPE`` tokens, or anywhere after a neg-raising "don't think"; a word of VADER's
  human-rated lexicon, Hutto & Gilbert 2014, shipped in its wheel, or one the model's own
  short-text bag weighs at least ``POLAR`` alone: "marvellous", "tedious"), if the model read
  it at face value (its weight has the word's own sign: it missed the negator), is reversed
  (times ``SHIFT``);
  words the model already read as negated ("not bad" is a bigram it knows), the words that
  only negation licenses ("any", "at all") and everything else keep the model's weights.
  An even number cancels out (the negators' own weights too); idioms whose negation is not a
  reversal keep the model's answer ("not only", "no wonder", "never seen such", "I don't think
  I've ever had a worse", "couldn't be happier", "can't praise it enough", "can't believe how
  good", "don't waste your money", "don't bother").  Reversing the model's whole reading of
  the clause without its negators fails on natural text: words that live in negated contexts
  ("bother", "sense", "kidding") carry the negation's weight themselves (a validation
  measurement in docs/model.md);
* **ratings written as numbers** ("8/10", "4.5/5", "2 out of 10", "five stars", "1 star": out
  of five; not "2 stars in it") are the writer's own score: a clause holding one is answered by
  it, ``RATING_SCALE * (2 * fraction - 1)`` in log-odds (10/10: +3, 5/10: 0, 1/10: -2.4), and
  by its reverse when negated ("not 10/10", "I would not give it 5 stars");
* **a lexicon prior**: every word of VADER's lexicon adds ``PRIOR`` times its human-rated
  valence to its weight (reversed in a negator's scope, conceded with its clause): the network
  learnt its words from movie reviews and reads "We regretted the soup", "the waiter was rude"
  as unsure; people rated those words for any text.  It applies to every short text;
* **ellipsis**: a negated clause with nothing but pronouns and auxiliaries ("but it wasn't",
  "I couldn't", "It was not.", "I didn't!"; not a tag question, "..., wasn't it") denies the
  clause before it: the denial says that clause's answer, reversed, and the clause itself no
  longer counts ("I thought it would be great, but it wasn't" is "it wasn't great").

A composed answer states an opinion the writer reversed, denied, rated or set against another:
its verdict is never ``neutral`` unless it is uncertain (the verdict rule is fitted on natural
texts, where statements never hold a negation, and read their moderate log-odds as no opinion).
``explain_reviews`` also answers an uncertain short text's verdict ``neutral``, never a side.

The composed answer keeps the explanation's accounting: every token's weight is its share of
the log-odds, so sentence answers, reasons and the verdict read it as they read any answer; a
negator that reversed a word is shown among the words as strong as that word.  No model pass
is added: the composition works on the weights of the text's own pass.
Longer texts keep the model's answer unchanged, and so do short texts with none of these.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import pairwise

from shared.schema import LABELS
from shared.text import tokenize
from shared.vocab import Encoded
from worker.model import SHORT_TOKENS
from worker.model.explain import Explained
from worker.model.phrases import MAX_PHRASES
from worker.model.ratings import ratings
from worker.model.verdict import NEGATIONS

#: Weight of a conceded clause and the shrinking of a reversed word (and ``PRIOR``, ``POLAR``):
#: chosen together by ``python bench/behaviour.py --tune`` (the fewest failures on the tuning
#: templates among the settings that do not cost the network's accuracy on natural sentences
#: of the validation reviews).
CONCEDED = 0.2
SHIFT = 1.0
#: How many tokens after a negator it reverses ("not good", "wasn't a great", "don't think
#: it's good"); further words stay as the model read them (see ``CONCEDED``).
SCOPE = 3
#: Log-odds a short text's word gains per point of its human-rated valence (VADER's lexicon,
#: -4..4), reversed in a negator's scope and conceded with its clause: the network learned its
#: words from movie reviews, people also write "the waiter was rude".
PRIOR = 0.0
#: A word outside VADER's lexicon is an opinion word if the model's short-text bag weighs it
#: at least this much alone ("marvellous", "tedious"); 0: VADER's words only.
POLAR = 0.5
#: Below this |log-odds| a denied clause has no opinion to deny.
MIN_DENIED = 0.5
#: Negators: the closed class the reasons keep too ("not", "n't", "never", "no", "without").
NEGATORS = NEGATIONS
#: Open a clause that concedes every clause before it.
_AFTER = frozenset({"but", "however", "nevertheless", "nonetheless"})
#: Open a clause that concedes itself.
_CONCESSIVE = frozenset({"although", "though", "whereas"})
#: What an elliptical denial is made of besides its negators ("but it wasn't").
_ELLIPTICAL = """
    i you he she it we they this that there so and but however yet though really
    is am are was were be been do does did have has had will would could should can
    might must at all to either !"""
_ELLIPSIS = frozenset(_ELLIPTICAL.split())
#: Negator + word: not a reversal ("nothing but the best", "not only ... but also").
_NOT_REVERSED = frozenset({"only", "but", "wonder", "wait", "waste", "bother", "doubt"})
#: "I have never seen such a ...", "never been so ...": a superlative, not a reversal.
_SUCH = frozenset({"such", "so", "better", "more", "funnier", "worse", "as"})
_CAN_NOT = frozenset({"can't", "cannot", "couldn't"})
#: Skipped when looking for what follows a negator ("couldn't *be* happier").
_LINKING = frozenset({"be", "been", "have", "had", "get", "got", "feel", "felt"})
#: "nothing but", "all but", "anything but", "no choice but", "can't help but": no contrast.
_BUT_ONLY = frozenset({"nothing", "all", "anything", "choice", "help"})
#: Neg-raising verbs: their negation is the negation of the clause they take (Horn 1978).
_NEG_RAISING = frozenset({"think", "believe", "suppose", "expect", "imagine", "reckon"})
_OPENERS = _AFTER | _CONCESSIVE | {"yet"}
#: Negators of a thing, not of a predicate: what follows them is what is missing ("no refund"),
#: so only a word of VADER's lexicon is an opinion word after them.
_ABSENCE = frozenset(["no", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without"])
_NONE: Mapping[str, float] = {}
#: Where a piece (a clause, unless a contrast word cuts it further) ends: after sentence ends,
#: ``, ; :`` (not in "4.5" or "1,000"), dashes and new lines.
_PIECE_END = re.compile(r"(?:[!?;:\u2026]|[.,](?!\d))+|\s[-\u2013\u2014]+\s|\n")


@dataclass(frozen=True)
class Clause:
    """Tokens ``[start, end)`` of a text; ``negators``: their positions; ``weight``: how much
    the clause counts; ``denies``: the clause an elliptical denial reverses (else -1)."""

    start: int
    end: int
    negators: tuple[int, ...]
    weight: float
    denies: int = -1
    #: A rating written as a number in the clause ("8/10", "2 out of 10", "5 stars"): its
    #: log-odds and the positions of its tokens.
    rating: float | None = None
    rated: tuple[int, ...] = ()
    #: Opinion words in its negators' scope: (position, the sign of the word's own valence).
    flips: tuple[tuple[int, float], ...] = ()

    @property
    def reversed(self) -> bool:
        return len(self.negators) % 2 == 1


def clauses(
    text: str, tokens: Sequence[str], polar: Mapping[str, float] = _NONE
) -> list[Clause] | None:
    """The clauses of a text whose ``tokens`` hold a negator, a contrast word or a rating (else
    None; None too when the pieces' tokens do not add up to ``tokens``)."""
    rates = ratings(tokens)
    if not rates and not any(
        t in NEGATORS or t in _AFTER or t in _CONCESSIVE or t == "yet" for t in tokens
    ):
        return None
    pieces: list[tuple[int, int]] = []
    at = 0
    ends = [m.end() for m in _PIECE_END.finditer(text)]
    for piece in (text[a:b] for a, b in zip([0, *ends], [*ends, len(text)], strict=True)):
        got = tokenize(piece)
        if got != list(tokens[at : at + len(got)]):
            return None
        if got:
            pieces.append((at, at + len(got)))
        at += len(got)
    if at != len(tokens):
        return None
    starts = {start for start, _ in pieces}
    opens = {i for i in range(len(tokens)) if _opens(tokens, i, i in starts)}
    bounds: list[tuple[int, int]] = []
    for start, end in pieces:
        for i in range(start + 1, end):
            if i in opens:
                bounds.append((start, i))
                start = i
        bounds.append((start, end))
    weights = [1.0] * len(bounds)
    denies = [-1] * len(bounds)
    for c, (start, end) in enumerate(bounds):
        first = tokens[start] if start in opens else ""
        if first in _CONCESSIVE:
            weights[c] *= CONCEDED
        elif first:
            weights[:c] = [w * CONCEDED for w in weights[:c]]
        negators = _negators(tokens, start, end)
        rest = [t for t in tokens[start:end] if t not in NEGATORS]
        words = [t for t in tokens[start:end] if t not in _OPENERS and t != "and"]
        tag = bool(words) and words[0] in NEGATORS  # "..., wasn't it": a tag question
        if negators and c > 0 and not tag and all(t in _ELLIPSIS for t in rest):
            denies[c] = c - 1
            weights[c - 1] = 0.0  # its content is what the denial says, reversed
    parts = []
    for (s, e), w, d in zip(bounds, weights, denies, strict=True):
        inside = [(at, z) for at, z in rates if s <= at[0] and at[-1] < e]
        rating = sum(z for _, z in inside) / len(inside) if inside else None
        rated = tuple(i for at, _ in inside for i in at)
        if rating is not None and len(_negators(tokens, s, rated[0])) % 2 == 1:
            rating = -rating  # "not 10/10", "I would not give it 5 stars"
        negators = () if inside else _negators(tokens, s, e)
        flips = _scope(tokens, negators[0], e, polar) if len(negators) % 2 == 1 else ()
        parts.append(Clause(s, e, negators, w, -1 if inside else d, rating, rated, flips))
    if all(
        p.weight == 1.0
        and not p.flips
        and p.denies < 0
        and p.rating is None
        and (p.reversed or not p.negators)  # an even number of negators cancels out
        for p in parts
    ):
        return None  # nothing to compose: the model's own answer
    return parts


def _opens(tokens: Sequence[str], i: int, piece_start: bool) -> bool:
    """Whether token ``i`` opens a contrasting clause: "but" (not after "not only", "nothing",
    "all", "anything"), "however", "nevertheless", "nonetheless", "yet" opening a piece or
    after "and", "although", "though", "whereas"."""
    word = tokens[i]
    if word == "but":
        before = tokens[:i]
        after_only = any(pair == ("not", "only") for pair in pairwise(before))
        return not after_only and (i == 0 or tokens[i - 1] not in _BUT_ONLY)
    if word == "yet":  # not "not yet", "yet another", "the best yet"
        return (piece_start or tokens[i - 1] == "and") and i + 1 < len(tokens)
    return word in _AFTER or word in _CONCESSIVE


def _negators(tokens: Sequence[str], start: int, end: int) -> tuple[int, ...]:
    """Positions of the clause's negators that reverse it: not "not only", "no wonder",
    "never seen such ...", "I don't think I've ever had a worse ...", "couldn't be happier",
    "can't praise it enough", "can't believe how good"."""
    out = []
    for i in range(start, end):
        word, after = tokens[i], tokens[i + 1 : end]
        if word not in NEGATORS or any(t in _NOT_REVERSED for t in after[:2]):
            continue
        if "ever" in after or (word == "never" and any(t in _SUCH for t in after)):
            continue  # a superlative experience, not a reversal
        head = [t for t in after if t not in _LINKING][:1]
        if head and (head[0] in _SUCH or head[0].endswith("ier")):
            continue  # "couldn't be happier", "never been better"
        if word in _CAN_NOT and ("enough" in after or after[:1] == ["believe"]):
            continue
        out.append(i)
    return tuple(out)


def _scope(
    tokens: Sequence[str], negator: int, end: int, polar: Mapping[str, float]
) -> tuple[tuple[int, float], ...]:
    """The first opinion word in the ``SCOPE`` tokens after ``negator`` (to the clause's
    ``end`` after a neg-raising verb: "I don't think it is great" denies "it is great"), as
    SO-CAL shifts the next opinion word ("it never loses its charm": "loses", not "charm"):
    ((position, sign of its valence),) or ().  A word of VADER's lexicon comes first; without
    one, the word the model weighs most alone (at least ``POLAR``: "wasn't marvellous"), only
    within ``SCOPE`` and after a negator of a predicate ("not", "never", "hardly"), not of a
    thing ("no refund": the bag learnt "refund" from complaints, it is no opinion)."""
    lexicon = opinion_lexicon()
    raising = negator + 1 < end and tokens[negator + 1] in _NEG_RAISING
    last = end if raising else min(end, negator + 1 + SCOPE)
    scope = [i for i in range(negator + 1, last) if tokens[i] not in _NOT_REVERSED]
    for i in scope:
        if tokens[i] in lexicon:
            return ((i, math.copysign(1.0, lexicon[tokens[i]])),)
    if tokens[negator] in _ABSENCE:  # "no refund", "without a reply": a thing, not an opinion
        return ()
    near = [i for i in scope if i <= negator + SCOPE and tokens[i] not in NEGATORS]
    strength, i = max(((abs(polar.get(tokens[i], 0.0)), i) for i in near), default=(0.0, -1))
    if POLAR and strength >= POLAR:
        return ((i, math.copysign(1.0, polar[tokens[i]])),)
    return ()


@cache
def opinion_lexicon() -> dict[str, float]:
    """VADER's lexicon (word -> mean human valence, -4..4), words of |valence| >= 1 only."""
    text = (resources.files("vaderSentiment") / "vader_lexicon.txt").read_text("utf-8")
    rows = (line.split("\t") for line in text.splitlines())
    return {r[0]: float(r[1]) for r in rows if len(r) > 1 and abs(float(r[1])) >= 1.0}


def valences(tokens: Sequence[str]) -> list[float]:
    """Each token's valence in VADER's lexicon (0 for other words and for negators)."""
    lexicon = opinion_lexicon()
    return [0.0 if t in NEGATORS else lexicon.get(t, 0.0) for t in tokens]


def compose(
    weights: Sequence[float], parts: Sequence[Clause], prior: Sequence[float] = ()
) -> list[float]:
    """Tokens' composed weights (toward positive) from the text's own ``weights`` (and each
    token's ``prior``, reversed in a negator's scope)."""
    out = list(weights)
    for part in parts:
        flipped = {i for i, _ in part.flips}
        for i in range(part.start, min(part.end, len(prior))):
            out[i] += prior[i] * (-SHIFT if i in flipped else 1.0)
    said: dict[int, float] = {}  # what a clause says, before its weight (for a denial)
    for c, part in enumerate(parts):
        span = range(part.start, part.end)
        if part.rating is not None:  # a score the writer gave: it is the clause's answer
            for i in span:  # carried by its number ("8/10", "2" of "2 out of 10")
                out[i] = part.rating if i == part.rated[0] else 0.0
        for i, sign in part.flips:
            if weights[i] * sign > 0:  # read at face value: the model missed the negator
                out[i] += -SHIFT * weights[i] - weights[i]
        if part.negators and not part.reversed:  # two negations cancel, their weights too
            for i in part.negators:
                out[i] = 0.0
        said[c] = float(sum(out[i] for i in span))
    for part in parts:
        span = range(part.start, part.end)
        denied = said.get(part.denies, 0.0)
        if part.denies >= 0 and abs(denied) >= MIN_DENIED:
            share = -SHIFT * denied / len(part.negators)
            for i in span:
                out[i] = share if i in part.negators else 0.0
        for i in span:
            out[i] *= part.weight
    return out


def recompose(
    texts: Sequence[str],
    encoded: Sequence[Encoded],
    explained: list[Explained],
    top_k: int,
    polar: Mapping[str, float] = _NONE,
) -> set[int]:
    """Replace, in ``explained``, the answers of short texts with negators, contrast words or
    ratings by their composed answers; returns the positions of those the composition
    changed."""
    changed = set()
    for k, (text, enc) in enumerate(zip(texts, encoded, strict=False)):
        if enc.truncated or enc.n_tokens > SHORT_TOKENS:
            continue
        parts = clauses(text, enc.tokens, polar)
        prior = [PRIOR * v for v in valences(enc.tokens)] if PRIOR else []
        if parts is None and not any(prior):
            continue  # nothing to compose: the model's answer, as it is
        whole = [Clause(0, len(enc.tokens), (), 1.0)]  # a text with only the lexicon's words
        new = _composed(explained[k], enc.tokens, parts or whole, top_k, prior)
        explained[k] = new or explained[k]
        if new is not None and parts is not None:  # negation, contrast or a rating changed it
            changed.add(k)
    return changed


def _composed(
    exp: Explained,
    tokens: Sequence[str],
    parts: Sequence[Clause],
    top_k: int,
    prior: Sequence[float] = (),
) -> Explained | None:
    toward = 1.0 if exp.label == LABELS[1] else -1.0
    weights = [w * toward for w in exp.token_weights]
    new = compose(weights, parts, prior)
    if new == weights:
        return None  # nothing reversed, denied, rated or conceded: the model's answer
    z = exp.log_odds - sum(weights) + sum(new)  # the bias is nobody's, before and after
    sign = 1.0 if z > 0 else -1.0
    oriented = [w * sign for w in new]
    by_word: dict[str, float] = defaultdict(float)
    for t, w in zip(tokens, oriented, strict=True):
        by_word[t] += w
    for part in parts:  # a negator that reversed a word is shown as strong as that word
        flipped = [oriented[i] for i, _ in part.flips if new[i] != weights[i]]
        if flipped and part.denies < 0:
            for i in part.negators:
                by_word[tokens[i]] = max(by_word[tokens[i]], max(flipped))
    top = sorted(by_word.items(), key=lambda item: -abs(item[1]))[:top_k]
    phrases = []
    for part in parts:  # a clause of two or more tokens, without its opening contrast word
        start = part.start + int(tokens[part.start] in _OPENERS)
        value = sum(oriented[part.start : part.end])
        if part.end - start >= 2 and value > 0:
            phrases.append((start, part.end, value))
    p_pos = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
    return Explained(
        label=LABELS[int(z > 0)],
        scores={LABELS[0]: 1.0 - p_pos, LABELS[1]: p_pos},
        log_odds=z,
        token_weights=oriented,
        phrases=sorted(phrases, key=lambda p: -p[2])[:MAX_PHRASES],
        top_words=[[t, round(w, 4)] for t, w in top],
    )
