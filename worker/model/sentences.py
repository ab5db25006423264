"""Per-sentence answers from the review's own pass: each sentence's share of the log-odds.

The explanation splits a review's log-odds between its tokens (``worker.model.explain``:
gradient x input for the CNN, exact shares for the n-gram bags).  A sentence's answer is the
sum of its tokens' shares, ``z_s``: the part of the model's decision that sentence carries, so
the sentences of a review add up to (nearly: biases are nobody's) the review's own answer, and
a review of twenty sentences costs one forward pass, not twenty-one.  ``z_s`` is calibrated
like any answer, ``z_s / temperature + bias``, with a pair fitted on validation sentences of
known polarity (``sentiment-verdict``; ``manifest["verdict"]["sentences"]``).  A sentence's
top words are its tokens' shares summed per word, oriented to the sentence's own label.

Token positions: a review's tokens are its sentences' tokens one after the other (tokens never
cross the white space between sentences); where that cannot be vouched for (markup inside a
sentence, two sentences not separated by white space) the review is tokenized whole and
compared, and a review whose tokens differ gets its sentences answered each on its own pass
(``explain_reviews`` does it).  In a truncated review the tokens the model did not read (the
middle) carry no share: a sentence there has ``z_s`` 0, and says so with ``read: false``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any, NamedTuple

import numpy as np

from shared.schema import LABELS
from shared.sentences import sentence_spans
from shared.text import tokenize, tokens_by_span
from shared.vocab import OOV_ID


@dataclass(frozen=True)
class Split:
    """A text's sentences: spans, token counts, and the text's tokens (None: not aligned)."""

    spans: list[tuple[int, int]]
    counts: list[int]
    tokens: list[str] | None


def split(text: str) -> Split:
    """The sentences of ``text`` and its tokens, aligned with them (see the module docstring)."""
    spans = sentence_spans(text)
    placed = tokens_by_span(text, spans)
    if placed is not None:  # most text: the text's tokens cut by the spans' offsets
        return Split(spans, [len(p) for p in placed], [t for piece in placed for t in piece])
    pieces = [tokenize(text[s:e]) for s, e in spans]
    joined = [t for piece in pieces for t in piece]
    gaps_ok = all(any(c.isspace() for c in text[e:s]) for (_, e), (s, _) in pairwise(spans))
    if not gaps_ok or any("<" in text[s:e] for s, e in spans):
        whole = tokenize(text)
        if whole != joined:
            return Split(spans, [len(p) for p in pieces], None)
    return Split(spans, [len(p) for p in pieces], joined)


def truncation(n_tokens: int, max_len: int, head_fraction: float) -> tuple[int, int]:
    """(head, tail) tokens kept of a review of ``n_tokens`` (all of it: (n_tokens, 0))."""
    if n_tokens <= max_len:
        return n_tokens, 0
    head = round(max_len * head_fraction)
    return head, max_len - head


def ranges(
    counts: Sequence[int], n_tokens: int, max_len: int, head_fraction: float
) -> list[tuple[int, int]]:
    """Each sentence's [a, b) among the kept tokens (empty where the model did not read it)."""
    head, tail = truncation(n_tokens, max_len, head_fraction)
    out, pos = [], 0
    for n in counts:
        a, b = pos, pos + n
        pos = b
        if tail == 0 and head == n_tokens:
            out.append((a, b))
            continue
        start_tail = n_tokens - tail  # original positions >= this are kept after the head
        ka, kb = min(a, head), min(b, head)
        ta, tb = max(a, start_tail), max(b, start_tail)
        if tb > ta:  # some of it in the tail (a sentence can span the cut: head part + tail)
            if kb > ka:
                out.append((ka, head + (tb - start_tail)))
            else:
                out.append((head + (ta - start_tail), head + (tb - start_tail)))
        else:
            out.append((ka, kb))
    return out


class Tables:
    """Per-vocabulary lookups for sentence answers, built once per served version: whether
    an id is hidden from reasons (function words, "!", "?"), a known opinion target, a word that
    can be one, or a determiner."""

    def __init__(self, vocab_tokens: Sequence[str]) -> None:
        from worker.model.targets import DETERMINERS, lexicon, skipped
        from worker.model.verdict import FUNCTION_WORDS

        skip = skipped()
        known = lexicon()
        self.hidden = np.array([t in FUNCTION_WORDS or t in ("!", "?") for t in vocab_tokens])
        self.target = np.array([t in known for t in vocab_tokens])
        self.wordlike = np.array(
            [len(t) >= 3 and t.isalpha() and t not in skip for t in vocab_tokens]
        )
        self.determiner = np.array([t in DETERMINERS for t in vocab_tokens])
        self.size = len(vocab_tokens)


#: Words a sentence's reasons are chosen among (its top words shown are fewer), and most kept.
REASON_WORDS, SENTENCE_REASONS = 8, 4


class Shares(NamedTuple):
    """One review's tokens, ids and token weights (oriented to its raw label; times
    ``toward_positive``, +1 or -1, they point to the positive class), and its sentences' [a, b)
    among the tokens: consecutive, covering every token."""

    tokens: Sequence[str]
    ids: Sequence[int]
    weights: Sequence[float]
    toward_positive: float
    bounds: Sequence[tuple[int, int]]
    spans: Sequence[tuple[int, int]]


class Answered(NamedTuple):
    """One review's sentences as the result carries them, and what the verdict reads of each:
    (probability of the positive class, strongest evidence) and its log-odds share ``z``."""

    sentences: list[dict[str, Any]]
    seen: list[tuple[float, float]]
    z: list[float]


def answers(
    reviews: Sequence[Shares],
    tables: Tables,
    settings: tuple[tuple[float, float], float, float, int],
    build: bool = True,
) -> list[Answered]:
    """Each review's sentences' answers, with array operations over all the reviews at once
    (Python steps per sentence only to name its words and build its answer).

    ``settings``: the sentence calibration (temperature, bias), ``uncertain_below``, the
    reasons' ``min_share`` and the top words kept.  Without ``build`` only what the verdict
    reads is computed (``sentences`` are left empty).
    """
    from worker.model.targets import MAX_TARGETS

    if not reviews:
        return []
    bounds = [b for r in reviews for b in r.bounds]
    tokens = list(chain.from_iterable(r.tokens for r in reviews))
    token_ids = np.concatenate([np.asarray(r.ids, dtype=np.int64) for r in reviews])
    w = np.concatenate(
        [np.asarray(r.weights, dtype=np.float64) * r.toward_positive for r in reviews]
    )
    first_token = np.zeros(len(tokens), dtype=bool)
    first_token[np.cumsum([0] + [len(r.tokens) for r in reviews[:-1]])] = True
    (temperature, bias), uncertain_below, min_share, top_k = settings
    n_sent = len(bounds)
    lengths = np.array([b - a for a, b in bounds], dtype=np.int64)
    sid = np.repeat(np.arange(n_sent), lengths)
    z = np.bincount(sid, weights=w, minlength=n_sent)
    p = 1.0 / (1.0 + np.exp(-np.clip(z / temperature + bias, -60.0, 60.0)))
    positive = p > 0.5
    orient = np.where(positive, 1.0, -1.0) / temperature
    # Shares summed per word within each sentence (an OOV token is a word of its own).
    key = np.where(token_ids == OOV_ID, tables.size + np.arange(len(token_ids)), token_ids)
    width = tables.size + len(token_ids)
    combo = sid * width + key
    uniq, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=w * orient[sid], minlength=len(uniq))
    owner = uniq // width
    strongest = np.zeros(n_sent)
    np.maximum.at(strongest, owner, sums)
    if not build:  # what the verdict reads only: no words, no answers to show
        return _seen(reviews, p.tolist(), strongest.tolist(), z.tolist(), [])
    # By sentence (``uniq`` is sorted, so ``owner`` is), strongest first within each: one
    # sort of a key in (sentence - 0.5, sentence], lower for a stronger word.
    strength = np.abs(sums)
    order = np.argsort(owner - 0.5 * strength / (strength.max() or 1.0), kind="stable")
    group_start = np.searchsorted(owner[order], np.arange(n_sent))
    rank = np.arange(len(order)) - group_start[owner[order]]
    top = order[rank < top_k]  # grouped by sentence, strongest first: the words shown
    considered = order[rank < max(top_k, REASON_WORDS)]  # the words reasons come from
    word_ids = np.where(key < tables.size, key, 0)
    reason = (sums > 0) & (sums >= min_share * strongest[owner]) & ~tables.hidden[word_ids[first]]
    previous = np.concatenate([[False], tables.determiner[token_ids[:-1]]]) & ~first_token
    candidate = tables.wordlike[token_ids] & (tables.target[token_ids] | previous)
    candidate &= token_ids != OOV_ID
    # Each sentence's top words: consecutive runs of ``top`` (``cut`` marks where they end).
    top_words_of = [tokens[i] for i in first[top].tolist()]
    pairs = [[t, v] for t, v in zip(top_words_of, np.round(sums[top], 4).tolist(), strict=True)]
    cut = np.cumsum(np.bincount(owner[top], minlength=n_sent)).tolist()
    reason_of = [tokens[i] for i in first[considered[reason[considered]]].tolist()]
    reason_cut = np.cumsum(
        np.bincount(owner[considered[reason[considered]]], minlength=n_sent)
    ).tolist()
    targets: list[list[str]] = [[] for _ in range(n_sent)]
    known = {tokens[i] for i in np.flatnonzero(tables.target[token_ids]).tolist()}
    chosen = np.flatnonzero(candidate)
    for i, k in zip(chosen.tolist(), sid[chosen].tolist(), strict=True):
        if tokens[i] not in targets[k]:
            targets[k].append(tokens[i])
    p_list, pos_list = p.tolist(), positive.tolist()
    p_rounded = np.round(p, 5).tolist()
    n_rounded = np.round(1.0 - p, 5).tolist()
    unsure = (np.where(positive, p, 1.0 - p) < uncertain_below).tolist()
    strongest_list, z_list = strongest.tolist(), z.tolist()
    negative_label, positive_label = LABELS
    flat: list[dict[str, Any]] = []
    at = reason_at = 0
    spans = [span for r in reviews for span in r.spans]
    for k, ((a, b), (start, end)) in enumerate(zip(bounds, spans, strict=True)):
        lo, hi = at, cut[k]
        at = hi
        reasons = reason_of[reason_at : reason_cut[k]][:SENTENCE_REASONS]
        reason_at = reason_cut[k]
        # Targets other than the reasons, but a known target stays one, reason or not.
        found = [t for t in targets[k] if t not in reasons or t in known] if reasons else targets[k]
        flat.append(
            {
                "start": start,
                "end": end,
                "label": positive_label if pos_list[k] else negative_label,
                "scores": {negative_label: n_rounded[k], positive_label: p_rounded[k]},
                "uncertain": unsure[k],
                "read": b > a,
                "top_words": pairs[lo:hi],
                "reasons": reasons,
                "targets": found[:MAX_TARGETS],
            }
        )
    return _seen(reviews, p_list, strongest_list, z_list, flat)


def _seen(
    reviews: Sequence[Shares],
    p: list[float],
    strongest: list[float],
    z: list[float],
    sentences: list[dict[str, Any]],
) -> list[Answered]:
    """Per review, its sentences' answers (``sentences`` in order, or none) and readings."""
    out, k = [], 0
    for r in reviews:
        n = len(r.bounds)
        seen = list(zip(p[k : k + n], strongest[k : k + n], strict=True))
        out.append(Answered(sentences[k : k + n], seen, z[k : k + n]))
        k += n
    return out
