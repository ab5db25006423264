"""A review's four-valued verdict from its sentences, and the words worth showing a reader.

**Verdict** (``positive``, ``negative``, ``mixed``, ``neutral``), from what the model says of the
whole text and of each of its sentences (a one-sentence text is its own sentence): calibrated
probabilities, how many sentences lean each way, and the evidence (the strongest supporting
word's weight; statements without opinion have little).  ``sentiment-verdict`` fits a
four-class logistic regression over those ``FEATURES`` on validation texts and records it in
the manifest under ``verdict``; a version without it uses a threshold rule (``VerdictRule``).
``label`` keeps its binary meaning for every consumer.

**Reasons**: the words a person reads as why (bot, page, summaries).  The data keeps every
weight (``top_words``); a reason is a word that supports the label with at least ``min_share``
of the strongest supporting word's weight, and not a function word ("the", "was", "is") unless
it is a negation ("not", "no", "never", "isn't"), which is kept when it carries that share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from shared.schema import VERDICTS
from shared.store import StoreError
from worker.model import SHORT_TOKENS

__all__ = ["VERDICTS", "VerdictRule"]

#: Closed-class English words that are noise as reasons (negations are not here).
_FUNCTION_WORDS = """
    a an the and or but if then than so as of at by for from in into on onto to with about
    over under after before during between through this that these those there here it its
    it's i me my mine we us our you your he him his she her they them their what which who whom
    whose when where why how is am are was were be been being do does did done have has had
    having will would shall should can could may might must 's s also just very really quite
    too much many more most some any all each every both either other such own same only one
    ones up down out off again once while because until though although yet still even ever
    get got gets go goes went going make makes made let lets see seen saw say says said
    i'm i've i'd i'll you're you've you'd you'll we're we've we'd we'll they're they've they'd
    they'll he'd he'll she'd she'll it'll that's there's here's what's who's let's
    myself yourself himself herself itself ourselves yourselves themselves
    someone somebody anyone anybody everyone everybody something anything everything"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
_NEGATIONS = """
    not no never none nothing nobody nowhere neither nor without hardly barely cannot can't
    don't doesn't didn't isn't aren't wasn't weren't won't wouldn't couldn't shouldn't haven't
    hasn't hadn't ain't"""
NEGATIONS = frozenset(_NEGATIONS.split())


#: What the fitted verdict reads of a text (``features``): its own log-odds and evidence, and
#: its sentences' (probabilities, shares on each side, the strongest supporting word's weight).
#: Counts stop at ``FEW`` sentences and lengths at ``SHORT_TOKENS`` tokens: a whole review is
#: many sentences long and always has an opinion in the sets the rule is fitted on, so raw
#: counts taught it that a one-line message is a statement (v0007: "I disliked this director."
#: neutral).
FEATURES = (
    "log_odds",
    "abs_log_odds",
    "max_sentence_positive",
    "max_sentence_negative",
    "positive_share",
    "negative_share",
    "few_sentences",
    "evidence",
    "max_sentence_evidence",
    "mean_abs_sentence_log_odds",
    "both_sides",
    "log_short_tokens",
)
#: The features of rules fitted before (v0005-v0007): raw counts; their manifests name them.
FEATURES_V1 = (
    "log_odds",
    "abs_log_odds",
    "max_sentence_positive",
    "max_sentence_negative",
    "positive_sentences",
    "negative_sentences",
    "sentences",
    "evidence",
    "max_sentence_evidence",
    "mean_abs_sentence_log_odds",
    "both_sides",
    "log_tokens",
)
FEW = 3
#: A sentence counts on a side in the features when its probability for it is at least this.
SIDE = 0.7


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class Observed(NamedTuple):
    """What a verdict is given about a text: its positive probability, its evidence (the
    strongest token weight for its label), its token count, and ``(probability, evidence)``
    of each sentence (a text of one sentence is its own sentence)."""

    p_text: float
    evidence: float
    n_tokens: int
    sentences: Sequence[tuple[float, float]]


def features(seen: Observed, names: Sequence[str] = FEATURES) -> list[float]:
    """The features ``names`` (``FEATURES`` or ``FEATURES_V1``) of an observed text."""
    p_text, evidence = seen.p_text, seen.evidence
    sentences = list(seen.sentences) or [(p_text, evidence)]
    ps = [p for p, _ in sentences]
    pos = sum(1 for p in ps if p >= SIDE)
    neg = sum(1 for p in ps if 1 - p >= SIDE)
    z = _logit(p_text)
    n = len(ps)
    value = {
        "log_odds": z,
        "abs_log_odds": abs(z),
        "max_sentence_positive": max(ps),
        "max_sentence_negative": 1 - min(ps),
        "positive_sentences": float(pos),
        "negative_sentences": float(neg),
        "sentences": float(n),
        "positive_share": pos / n,
        "negative_share": neg / n,
        "few_sentences": float(min(n, FEW)),
        "evidence": evidence,
        "max_sentence_evidence": max(e for _, e in sentences),
        "mean_abs_sentence_log_odds": sum(abs(_logit(p)) for p in ps) / n,
        "both_sides": float(min(pos, neg)),
        "log_tokens": math.log(max(seen.n_tokens, 1)),
        "log_short_tokens": math.log(min(max(seen.n_tokens, 1), SHORT_TOKENS)),
    }
    return [value[name] for name in names]


@dataclass(frozen=True)
class VerdictRule:
    """How a version gives verdicts and reasons; ``from_manifest`` reads a version's.

    A fitted version carries ``linear``: a multinomial logistic regression over the
    standardised ``FEATURES`` (``mean``, ``scale``, one ``coef`` row and ``intercept`` per
    verdict), fitted on validation texts; the verdict is its most probable class.  Versions
    without it use the thresholds: ``mixed`` when sentences of at least ``opinion``
    probability take both sides and the smaller side has at least ``minority`` of them,
    ``neutral`` when none does and the text's larger probability is under ``neutral``, else
    the label.
    """

    opinion: float = 0.75
    neutral: float = 0.7
    minority: float = 0.2
    min_share: float = 0.25
    linear: dict[str, Any] | None = None
    #: (temperature, bias) of a sentence's share of the log-odds (``worker.model.sentences``).
    sentence_calibration: tuple[float, float] = (1.0, 0.0)

    @property
    def fitted(self) -> bool:
        return self.linear is not None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> VerdictRule:
        raw = manifest.get("verdict") or {}
        reasons = manifest.get("reasons") or {}
        linear = raw.get("linear")
        rule = cls(
            opinion=float(raw.get("opinion", cls.opinion)),
            neutral=float(raw.get("neutral", cls.neutral)),
            minority=float(raw.get("minority", cls.minority)),
            min_share=float(reasons.get("min_share", cls.min_share)),
            linear=linear,
            sentence_calibration=(
                float((raw.get("sentences") or {}).get("temperature", 1.0)),
                float((raw.get("sentences") or {}).get("bias", 0.0)),
            ),
        )
        values = (rule.opinion, rule.neutral, rule.minority, rule.min_share)
        if not all(math.isfinite(v) for v in values) or not (
            0.5 <= rule.opinion < 1 and 0.5 <= rule.neutral <= 1 and 0 <= rule.minority <= 0.5
        ):
            raise StoreError(f"bad verdict rule in the manifest: {raw} {reasons}")
        t, b = rule.sentence_calibration
        if not (math.isfinite(t) and math.isfinite(b) and t > 0):
            raise StoreError(f"bad sentence calibration in the manifest: {raw.get('sentences')}")
        if linear is not None and not _valid_linear(linear):
            raise StoreError("bad verdict coefficients in the manifest")
        return rule

    def as_manifest(self) -> dict[str, Any]:
        verdict: dict[str, Any] = {
            "opinion": self.opinion,
            "neutral": self.neutral,
            "minority": self.minority,
        }
        t, b = self.sentence_calibration
        verdict["sentences"] = {"temperature": t, "bias": b}
        if self.linear is not None:
            verdict["linear"] = self.linear
            verdict["rule"] = (
                "multinomial logistic regression over the standardised features "
                "(worker.model.verdict.FEATURES); the verdict is the most probable class"
            )
        return {
            "verdict": verdict,
            "reasons": {
                "min_share": self.min_share,
                "rule": (
                    "words supporting the label with >= min_share of the strongest one's "
                    "weight; function words only when they are negations"
                ),
            },
        }

    def verdicts(self, seen: Sequence[Observed]) -> list[str]:
        """The verdicts of observed texts (the linear rule: one matrix product for them all)."""
        if self.linear is None or not seen:
            return [self.verdict(s) for s in seen]
        lin = self.linear
        names = lin.get("features", FEATURES_V1)
        x = np.array([features(s, names) for s in seen]) - lin["mean"]
        x /= np.asarray(lin["scale"])
        scores = x @ np.asarray(lin["coef"], dtype=np.float64).T + lin["intercept"]
        classes = lin["classes"]
        return [str(classes[i]) for i in np.argmax(scores, axis=1).tolist()]

    def verdict(self, seen: Observed) -> str:
        """The verdict of an observed text."""
        if self.linear is not None:
            return self.verdicts([seen])[0]
        p_text = seen.p_text
        p_sentences = [p for p, _ in seen.sentences] or [p_text]
        pos = sum(1 for p in p_sentences if p >= self.opinion)
        neg = sum(1 for p in p_sentences if 1.0 - p >= self.opinion)
        if pos and neg and min(pos, neg) / (pos + neg) >= self.minority:
            return "mixed"
        if not pos and not neg and max(p_text, 1.0 - p_text) < self.neutral:
            return "neutral"
        return "positive" if p_text > 0.5 else "negative"

    def reasons(
        self, top_words: Iterable[Sequence[Any]], limit: int = 8, against: bool = False
    ) -> list[str]:
        """The readable reasons among ``[[word, weight], ...]`` (weights oriented to the label);
        ``against``: the words that speak against it, by the same rule."""
        sign = -1.0 if against else 1.0
        pairs = [(w, sign * v) for w, v in top_words]
        strongest = max([v for _, v in pairs], default=0.0)
        if strongest <= 0:
            return []
        floor = self.min_share * strongest
        kept = [
            (str(w), v)
            for w, v in pairs
            if v >= floor
            and w not in FUNCTION_WORDS  # negations are not function words here
            and w != "!"
            and w != "?"
        ]
        kept.sort(key=lambda p: -p[1])
        return [w for w, _ in kept[:limit]]


def _valid_linear(lin: Any) -> bool:
    names = lin.get("features", FEATURES_V1) if isinstance(lin, Mapping) else ()
    n = len(names)
    try:
        rows = lin["coef"]
        ok = (
            tuple(names) in (FEATURES, FEATURES_V1)
            and sorted(lin["classes"]) == sorted(VERDICTS)
            and len(lin["mean"]) == len(lin["scale"]) == n
            and len(rows) == len(lin["intercept"]) == len(VERDICTS)
            and all(len(r) == n for r in rows)
        )
        numbers = [*lin["mean"], *lin["scale"], *lin["intercept"], *(c for r in rows for c in r)]
        return ok and all(math.isfinite(float(v)) for v in numbers) and min(lin["scale"]) > 0
    except (KeyError, TypeError, ValueError):
        return False
