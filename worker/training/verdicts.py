"""Texts with a known four-valued verdict: to fit the verdict rule, and to evaluate it.

Nobody labels IMDB reviews "mixed" or "neutral", so the sets are built from labelled reviews and
an annotator independent of our models, **VADER** (Hutto & Gilbert 2014; its human-rated
lexicon of 7,500 words ships inside the ``vadersentiment`` wheel, MIT licence):

* an **opinion sentence** of a review is one VADER scores on the review's side (compound at
  least ``OPINION`` for a positive review, at most ``-OPINION`` for a negative one): two
  independent signals agree on it;
* a **statement** is a sentence of 6 to 40 tokens without a single VADER lexicon word, "!", "?",
  quotation marks (scare quotes are irony), negation, first or second person, modal verb or
  intensifier (plot summaries, dates, places: "The film opens in 1944 in a small town.");
* ``positive`` / ``negative`` texts: one to three opinion sentences of one review, in the
  review's order, or (a quarter of them each) one short opinion sentence (at most
  ``SHORT_TOKENS`` tokens: what people send a bot) or the whole review as written;
* ``mixed``: one or two opinion sentences of a positive review and one or two of a negative
  review, in either order;
* ``neutral``: one to three consecutive statements of one review.

``sentiment-verdict`` fits the rule on sets built from a version's validation reviews and the
unlabelled reviews (never test text); ``bench/verdicts.py`` builds the evaluation set from the
test split (``bench/data/verdicts.jsonl``), which nothing is fitted on.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.progress import progress
from shared.schema import LABELS, VERDICTS
from shared.sentences import sentence_spans
from shared.text import tokenize
from worker.model.verdict import FEATURES, features
from worker.training.sentences import OPINION, is_statement, vader

MIN_TOKENS, MAX_TOKENS = 4, 40
#: Opinion sentences this short stand alone as positive or negative texts (a quarter of them).
SHORT_TOKENS = 10


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def annotate(texts: Sequence[str], desc: str = "annotate") -> list[list[tuple[str, float, bool]]]:
    """Per text, its sentences with VADER's compound score and whether they are statements."""
    analyser = vader()
    out = []
    for text in progress(texts, desc=desc, unit=" texts"):
        rows = []
        for s in sentences(text):
            n = len(tokenize(s))
            if not MIN_TOKENS <= n <= MAX_TOKENS:
                rows.append((s, 0.0, False))
                continue
            scores = analyser.polarity_scores(s)
            statement = is_statement(s, tokenize(s), scores)
            rows.append((s, float(scores["compound"]), statement))
        out.append(rows)
    return out


def build(
    labelled: Sequence[tuple[str, int]],
    plain: Sequence[str],
    per_class: int,
    seed: int,
) -> list[dict[str, Any]]:
    """``per_class`` texts of each verdict (module docstring), shuffled, with their sources.

    ``labelled`` are (text, 0/1) reviews for the opinions, ``plain`` any reviews for the
    statements; each item says which of them (by index) it was cut from."""
    rng = np.random.default_rng(seed)
    notes = annotate([t for t, _ in labelled], "annotate reviews")
    opinions: dict[int, list[int]] = {0: [], 1: []}
    by_review: list[list[str]] = []
    for i, ((_, label), rows) in enumerate(zip(labelled, notes, strict=True)):
        sign = 1 if label == 1 else -1
        kept = [s for s, c, _ in rows if sign * c >= OPINION]
        by_review.append(kept)
        if kept:
            opinions[label].append(i)
    items: list[dict[str, Any]] = []
    used: set[int] = set()

    def take(label: int, k: int) -> tuple[int, list[str]] | None:
        pool = [i for i in opinions[label] if i not in used]
        if not pool:
            return None
        i = int(rng.choice(pool))
        used.add(i)
        kept = by_review[i]
        n = min(k, len(kept))
        chosen = sorted(rng.choice(len(kept), n, replace=False))
        return i, [kept[j] for j in chosen]

    # Short opinion sentences ("Loved it.", "What a waste of time."): what chat messages are.
    short: dict[int, list[tuple[int, str]]] = {0: [], 1: []}
    for label in (0, 1):
        for i in opinions[label]:
            short[label] += [(i, s) for s in by_review[i] if len(tokenize(s)) <= SHORT_TOKENS]
    for label in (1, 0):
        for k in range(per_class):
            if k % 4 in (1, 2) and short[label]:  # one short opinion sentence on its own
                i, sentence = short[label].pop(int(rng.integers(len(short[label]))))
                items.append(_item(sentence, LABELS[label], {"review": i, "short": True}))
                continue
            if k % 4 == 3:  # a whole review, as written
                pool = [
                    i for i in range(len(labelled)) if labelled[i][1] == label and i not in used
                ]
                i = int(rng.choice(pool))
                used.add(i)
                items.append(_item(labelled[i][0], LABELS[label], {"review": i, "whole": True}))
                continue
            got = take(label, int(rng.integers(1, 4)))
            if got is not None:
                items.append(_item(" ".join(got[1]), LABELS[label], {"review": got[0]}))
    for _ in range(per_class):
        pos, neg = take(1, int(rng.integers(1, 3))), take(0, int(rng.integers(1, 3)))
        if pos is None or neg is None:
            break
        parts = [pos[1], neg[1]] if rng.random() < 0.5 else [neg[1], pos[1]]
        text = " ".join(itertools.chain(*parts))
        items.append(_item(text, "mixed", {"review": pos[0], "and_review": neg[0]}))
    items.extend(_statements(plain, per_class, rng))
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def _statements(plain: Sequence[str], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    order = rng.permutation(len(plain))
    for start in range(0, len(order), 500):
        chunk = [int(i) for i in order[start : start + 500]]
        for i, rows in zip(
            chunk, annotate([plain[i] for i in chunk], "annotate plain"), strict=True
        ):
            runs = [list(g) for ok, g in itertools.groupby(rows, key=lambda r: r[2]) if ok]
            if not runs:
                continue
            run = runs[int(rng.integers(len(runs)))]
            # Half are one statement alone: a one-line message is no opinion by its length.
            k = 1 if len(out) % 2 == 0 else min(len(run), int(rng.integers(1, 4)))
            first = int(rng.integers(len(run) - k + 1))
            text = " ".join(s for s, _, _ in run[first : first + k])
            out.append(_item(text, "neutral", {"plain": i}))
            if len(out) == n:
                return out
    return out


def _item(text: str, verdict: str, source: dict[str, Any]) -> dict[str, Any]:
    assert verdict in VERDICTS
    return {"text": text, "verdict": verdict, "source": source}


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> tuple[float, dict[str, Any]]:
    """Macro-averaged F1 over the four verdicts, with per-verdict F1 and the confusion table
    (rows gold, columns predicted, in ``VERDICTS`` order)."""
    index = {v: k for k, v in enumerate(VERDICTS)}
    table = np.zeros((len(VERDICTS), len(VERDICTS)), dtype=np.int64)
    for g, p in zip(gold, predicted, strict=True):
        table[index[g], index[p]] += 1
    f1 = {}
    for k, v in enumerate(VERDICTS):
        tp = table[k, k]
        precision = tp / max(1, table[:, k].sum())
        recall = tp / max(1, table[k, :].sum())
        f1[v] = float(0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(list(f1.values()))), {"f1": f1, "confusion": table.tolist()}


def sentence_calibration(
    served: Any, reviews: Sequence[tuple[str, int]]
) -> tuple[tuple[float, float], dict[str, Any]]:
    """(temperature, bias) for sentences' shares of the log-odds, by a Platt fit on the opinion
    sentences of labelled reviews (VADER agreeing with the review), each read in its review.
    The bias stays 0: a sentence that carries no share of the decision is 50/50."""
    from sklearn.linear_model import LogisticRegression

    from worker.model.served import explain_reviews

    notes = annotate([t for t, _ in reviews], "annotate sentences")
    z, y = [], []
    for start in progress(range(0, len(reviews), 256), desc="score", unit=" chunks"):
        chunk = reviews[start : start + 256]
        payload = [{"id": str(i), "text": t} for i, (t, _) in enumerate(chunk)]
        results = explain_reviews(served, payload, 0, sentences=True, observe=True)
        for (_, label), result, rows in zip(
            chunk, results, notes[start : start + 256], strict=True
        ):
            shares = result["sentence_log_odds"]
            if len(shares) != len(rows) or len(shares) < 2:
                continue  # one sentence: the review's own answer, not a share
            sign = 1 if label == 1 else -1
            for share, (_, compound, _) in zip(shares, rows, strict=True):
                if share is not None and sign * compound >= OPINION:
                    z.append(share)
                    y.append(label)
    if len(set(y)) < 2:
        return (1.0, 0.0), {"n": len(y)}
    fit = LogisticRegression(C=1e4, max_iter=1000, fit_intercept=False)
    fit.fit(np.array(z)[:, None], np.array(y))
    slope, intercept = float(fit.coef_[0, 0]), 0.0
    accuracy = float(np.mean((np.array(z) * slope + intercept > 0) == np.array(y)))
    if slope <= 0:
        return (1.0, 0.0), {"n": len(y), "refused": "the fitted slope is not positive"}
    return (round(1.0 / slope, 6), round(intercept, 6)), {
        "n": len(y),
        "positive": int(sum(y)),
        "accuracy": round(accuracy, 4),
    }


def observe(served: Any, texts: Sequence[str]) -> list[Any]:
    """What the verdict reads of each text as served (``worker.model.verdict.Observed``)."""
    from worker.model.served import explain_reviews

    out: list[Any] = []
    for start in progress(range(0, len(texts), 256), desc="score", unit=" chunks"):
        chunk = [{"id": str(i), "text": t} for i, t in enumerate(texts[start : start + 256])]
        out.extend(
            r["observed"] for r in explain_reviews(served, chunk, 0, sentences=True, observe=True)
        )
    return out


def fit_rule(
    seen: Sequence[Any], gold: Sequence[str], base: Any
) -> tuple[Any, float, dict[str, Any]]:
    """A four-class logistic regression over the verdict's features (standardised; C chosen
    by 5-fold cross-validated macro-F1 on these texts), as ``base`` (a ``VerdictRule``) with
    its coefficients: (rule, macro-F1 on these texts, details)."""
    from dataclasses import replace

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x = np.array([features(s) for s in seen])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    best: tuple[float, float] | None = None
    for c in (0.1, 1.0, 10.0):
        guess = cross_val_predict(LogisticRegression(C=c, max_iter=5000), z, gold, cv=5)
        f1, _ = macro_f1(gold, list(guess))
        if best is None or f1 > best[0] + 1e-9:
            best = (f1, c)
    assert best is not None
    model = LogisticRegression(C=best[1], max_iter=5000).fit(z, gold)
    linear = {
        "features": list(FEATURES),
        "classes": [str(c) for c in model.classes_],
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [[round(float(v), 6) for v in row] for row in model.coef_],
        "intercept": [round(float(v), 6) for v in model.intercept_],
        "C": best[1],
        "cross_validated_macro_f1": round(best[0], 4),
    }
    rule = replace(base, linear=linear)
    f1, details = macro_f1(gold, [rule.verdict(s) for s in seen])
    return rule, f1, details
