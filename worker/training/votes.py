"""The votes a challenger learns from, and the sets it is judged on, so that no voter steers it.

Votes are data that anyone with a token or a Telegram account writes.  Three rules keep one voter
(or one token) from publishing a model of their choosing:

* **a cap per voter**: at most ``max_per_user`` of a voter's latest votes are trained on;
* **held out by voter, weighed per voter**: the feedback set the gate scores is made of voters
  the challenger never trained on (a voter is wholly in or wholly out), and each held-out voter
  counts once, however many votes they sent.  With too few voters to hold any out, there is no
  feedback set at all: a voter's own votes are never evidence for the model they shaped;
* **a canary set**: labelled texts nobody voted about that share the votes' words.  Poisoned votes
  that teach "*word* means negative" flip the answers on these; honest corrections do not.  The
  gate refuses a challenger that loses accuracy there, overall or on any one word's texts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.feedback import Feedback
from shared.text import tokenize

#: Words of the votes checked at most (the most voted first).
CANARY_WORDS = 50
#: Canary texts per word at most.
CANARY_PER_WORD = 40
#: A word in more than this share of the pool says nothing about what the votes target.
CANARY_MAX_SHARE = 0.2
#: A word's canary texts are judged on their own from this many texts on.
CANARY_MIN_GROUP = 10


def training_set(items: list[Feedback], max_per_user: int) -> list[Feedback]:
    """At most ``max_per_user`` of each voter's latest votes, oldest first."""
    per_user: dict[str, list[Feedback]] = {}
    for item in sorted(items, key=lambda f: f.at, reverse=True):
        kept = per_user.setdefault(item.user, [])
        if len(kept) < max_per_user:
            kept.append(item)
    return sorted((f for kept in per_user.values() for f in kept), key=lambda f: f.at)


def split_by_voter(
    items: list[Feedback], holdout_fraction: float, min_voters: int
) -> tuple[list[Feedback], list[Feedback]]:
    """``(train, held out)``: about ``holdout_fraction`` of the voters (at least one) are held
    out whole, chosen by a hash of their pseudonym (stable from one cycle to the next), when
    there are at least ``min_voters``; otherwise nothing is held out."""
    voters = sorted({f.user for f in items}, key=lambda u: hashlib.sha256(u.encode()).hexdigest())
    if len(voters) < max(2, min_voters) or holdout_fraction <= 0:
        return sorted(items, key=lambda f: f.at), []
    n = max(1, round(len(voters) * holdout_fraction))
    held_voters = set(voters[:n])
    train = [f for f in items if f.user not in held_voters]
    held = [f for f in items if f.user in held_voters]
    return sorted(train, key=lambda f: f.at), sorted(held, key=lambda f: f.at)


def voter_weights(items: Sequence[Feedback]) -> np.ndarray:
    """A weight per vote such that every voter's votes add up to one."""
    counts = Counter(f.user for f in items)
    return np.array([1.0 / counts[f.user] for f in items], dtype=np.float64)


@dataclass(frozen=True)
class Canary:
    """Labelled texts nobody voted about, grouped by the voted word each contains."""

    texts: list[str]
    labels: np.ndarray
    groups: dict[str, list[int]]  # word -> indices into texts


def canary(
    votes: Sequence[Feedback],
    pool_texts: Sequence[str],
    pool_labels: np.ndarray,
    voted_texts: Sequence[str] = (),
    seed: int = 0,
) -> Canary:
    """Up to ``CANARY_PER_WORD`` pool texts for each of the ``CANARY_WORDS`` words most voted
    on in ``votes`` (words in more than ``CANARY_MAX_SHARE`` of the pool excepted: they target
    nothing), leaving out any text that was voted on (``votes`` and ``voted_texts``)."""
    voted = {v.text.strip() for v in votes} | {t.strip() for t in voted_texts}
    keep = [i for i, t in enumerate(pool_texts) if t.strip() not in voted]
    pool_tokens = {i: set(tokenize(pool_texts[i])) for i in keep}
    df: Counter[str] = Counter()
    for tokens in pool_tokens.values():
        df.update(tokens)
    by_votes: Counter[str] = Counter()
    for vote in votes:
        by_votes.update({t for t in tokenize(vote.text) if t.isalpha()})
    limit = CANARY_MAX_SHARE * max(1, len(keep))
    words = [w for w, _ in by_votes.most_common() if 0 < df[w] <= limit][:CANARY_WORDS]
    rng = np.random.default_rng(seed)
    chosen: dict[int, int] = {}  # pool index -> canary index
    groups: dict[str, list[int]] = {}
    for word in words:
        having = [i for i in keep if word in pool_tokens[i]]
        picked = rng.permutation(len(having))[:CANARY_PER_WORD]
        for j in sorted(int(p) for p in picked):
            index = having[j]
            chosen.setdefault(index, len(chosen))
            groups.setdefault(word, []).append(chosen[index])
    order = sorted(chosen, key=chosen.__getitem__)
    return Canary(
        [pool_texts[i] for i in order],
        np.asarray([pool_labels[i] for i in order], dtype=np.int64),
        groups,
    )
