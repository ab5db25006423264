"""The report's sections, computed: one dataclass per section, each with ``to_json()``
(the clusters are in ``clusters``).

The arrays a section keeps for its plots (the 2-D map, cluster assignment, per-sample losses)
are fields like any other; ``to_json()`` leaves them out and keeps every number the report shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.datasets import Review
from shared.progress import progress
from shared.schema import LABELS
from worker.training.analysis.run import EPS, SUBSAMPLE, Run, jsonable, subsample


@dataclass
class Training:
    """Section 1: the version's training history and its evaluation on these samples."""

    history: dict[str, Any]
    evaluation: dict[str, Any]
    errors: dict[str, int]

    @classmethod
    def compute(cls, version_path: Path, labels: np.ndarray, run: Run) -> Training:
        from worker.model.evaluate import classification_metrics

        history_file = version_path / "history.json"
        history = json.loads(history_file.read_text()) if history_file.exists() else {}
        pred = run.pred
        return cls(
            history={"epochs": history.get("epochs", []), "batches": history.get("batches", [])},
            evaluation=classification_metrics(labels, run.probs),
            errors={
                "total": int((pred != labels).sum()),
                "false_positive": int(((pred == 1) & (labels == 0)).sum()),
                "false_negative": int(((pred == 0) & (labels == 1)).sum()),
            },
        )

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {"history": self.history, "evaluation": self.evaluation, "errors": self.errors}
        )


@dataclass
class Population:
    """Section 2: the latent space on a PCA map, and where the worst errors sit."""

    xy: np.ndarray
    explained_variance: list[float]
    centroid_distance_sd: float
    silhouette_true_labels: float
    high_loss_nearer_other_class: float
    all_nearer_other_class: float
    high_loss_threshold: float
    sentences: list[str]

    @classmethod
    def compute(cls, run: Run, labels: np.ndarray, loss: np.ndarray) -> Population:
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        pca = PCA(n_components=2, random_state=0)
        xy = pca.fit_transform(run.features.astype(np.float64))
        centroids = np.array([xy[labels == c].mean(axis=0) for c in (0, 1)])
        pooled_sd = float(np.sqrt(np.mean([xy[labels == c].var(axis=0).sum() for c in (0, 1)])))
        distance = float(np.linalg.norm(centroids[1] - centroids[0]) / max(pooled_sd, EPS))
        sample = subsample(len(xy), SUBSAMPLE)
        silhouette = (
            float(silhouette_score(xy[sample], labels[sample]))
            if len(set(labels[sample])) > 1
            else 0.0
        )
        threshold = float(np.quantile(loss, 0.95))
        worst = loss >= threshold
        own = np.linalg.norm(xy - centroids[labels], axis=1)
        other = np.linalg.norm(xy - centroids[1 - labels], axis=1)
        nearer_other = float((other[worst] < own[worst]).mean()) if worst.any() else 0.0
        nearer_other_all = float((other < own).mean())
        explained = [float(v) for v in pca.explained_variance_ratio_]
        sentences = [
            f"The first two principal components of the {run.features.shape[1]}-dimensional "
            f"latent space explain {sum(explained):.0%} of its variance.",
            f"The classes' centroids lie {distance:.1f} pooled standard deviations apart "
            f"(silhouette of the true labels on the map: {silhouette:.2f}): "
            + ("a clear separation." if distance > 2 else "they overlap substantially."),
            f"Of the 5% highest-loss samples, {nearer_other:.0%} lie nearer the other class's "
            f"centroid (all samples: {nearer_other_all:.0%}): the worst errors are reviews the "
            "model places "
            + (
                "confidently among the other class."
                if nearer_other > 0.5
                else "near the boundary between the classes."
            ),
        ]
        return cls(
            xy,
            explained,
            distance,
            silhouette,
            nearer_other,
            nearer_other_all,
            threshold,
            sentences,
        )

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {
                "explained_variance": self.explained_variance,
                "centroid_distance_sd": self.centroid_distance_sd,
                "silhouette_true_labels": self.silhouette_true_labels,
                "high_loss_nearer_other_class": self.high_loss_nearer_other_class,
                "all_nearer_other_class": self.all_nearer_other_class,
                "high_loss_threshold": self.high_loss_threshold,
                "sentences": self.sentences,
            }
        )


def _strength(rho: float) -> str:
    a = abs(rho)
    return "negligible" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong"


def binned(name: str, values: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Loss and accuracy per bin of one feature, with the Spearman correlation in a sentence."""
    from scipy.stats import spearmanr

    distinct = np.unique(values)
    if len(distinct) <= 10:
        which = np.searchsorted(distinct, values)
        bin_names = [f"{v:g}" for v in distinct]
    else:
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 9))).tolist()
        which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        bin_names = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(len(edges) - 1)]
    bins = []
    for b, label in enumerate(bin_names):
        inside = which == b
        bins.append(
            {
                "bin": label,
                "count": int(inside.sum()),
                "mean_loss": float(loss[inside].mean()) if inside.any() else None,
                "accuracy": float(correct[inside].mean()) if inside.any() else None,
            }
        )
    rho, p = spearmanr(values, loss) if len(distinct) > 1 else (0.0, 1.0)
    rho = 0.0 if not np.isfinite(rho) else float(rho)
    filled = [b for b in bins if b["count"]]
    sentence = (
        f"Loss {'rises' if rho > 0 else 'falls'} with {name} (Spearman ρ = {rho:+.3f}, "
        f"{_strength(rho)}, p = {float(p):.1g}); accuracy goes from "
        f"{filled[0]['accuracy']:.1%} in the lowest bin to {filled[-1]['accuracy']:.1%} in the "
        "highest."
    )
    return {
        "feature": name,
        "bins": bins,
        "spearman_rho": rho,
        "p_value": float(p),
        "sentence": sentence,
    }


@dataclass
class Exploration:
    """Section 4: loss against simple features of the text (length, OOV, rating, TextBlob)."""

    features: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def compute(
        cls, reviews: Sequence[Review], run: Run, labels: np.ndarray, loss: np.ndarray
    ) -> Exploration:
        correct = run.pred == labels
        features: dict[str, dict[str, Any]] = {}
        for name, values in (("length (tokens)", run.lengths), ("OOV count", run.oov)):
            features[name] = binned(name, values.astype(float), loss, correct)
        notes = []
        ratings = np.array([r.rating if r.rating is not None else -1 for r in reviews])
        if (ratings >= 0).all():
            name = "rating confidence |rating - 5|"
            features[name] = binned(name, np.abs(ratings - 5).astype(float), loss, correct)
        else:
            notes.append(
                "Star ratings are not known for these samples (only aclImdb file names carry them)."
            )
        try:
            from textblob import TextBlob  # type: ignore[import-not-found]
        except ImportError:
            notes.append(
                "TextBlob is not installed: polarity and subjectivity are left out "
                "(pip install textblob)."
            )
        else:
            shown = progress(reviews, desc="textblob", unit=" reviews")
            blobs = [TextBlob(r.text).sentiment for r in shown]
            for name, values in (
                ("TextBlob polarity", np.array([s.polarity for s in blobs])),
                ("TextBlob subjectivity", np.array([s.subjectivity for s in blobs])),
            ):
                features[name] = binned(name, values, loss, correct)
        return cls(features, notes)

    def to_json(self) -> dict[str, Any]:
        return jsonable({"features": self.features, "notes": self.notes})


@dataclass
class Samples:
    """Section 5: the K highest-loss and K random reviews, with their word heat maps."""

    k: int
    items: list[dict[str, Any]]

    @classmethod
    def compute(
        cls,
        served: Any,
        reviews: Sequence[Review],
        run: Run,
        labels: np.ndarray,
        loss: np.ndarray,
        k: int,
    ) -> Samples:
        worst = np.argsort(-loss, kind="stable")[:k]
        rest = np.setdiff1d(np.arange(len(loss)), worst)
        chosen_random = (
            np.sort(np.random.default_rng(0).choice(rest, size=min(k, len(rest)), replace=False))
            if len(rest)
            else np.array([], dtype=int)
        )
        chosen = [*worst.tolist(), *chosen_random.tolist()]
        explained = served.explainer.explain_ids(
            [run.rows[i] for i in chosen], tokens=[run.tokens[i] for i in chosen], top_k=10
        )
        items = []
        for position, (i, e) in enumerate(zip(chosen, explained, strict=True)):
            sign = 1.0 if e.label == LABELS[1] else -1.0
            items.append(
                {
                    "group": "highest loss" if position < len(worst) else "random",
                    "id": reviews[i].id,
                    "truth": LABELS[int(labels[i])],
                    "predicted": LABELS[int(run.pred[i])],
                    "scores": {
                        LABELS[0]: float(run.probs[i, 0]),
                        LABELS[1]: float(run.probs[i, 1]),
                    },
                    "loss": float(loss[i]),
                    "tokens": run.tokens[i],
                    # the negative output's map is the negation of this one
                    "weights_positive": [round(sign * w, 4) for w in e.token_weights],
                    "top_phrases": [
                        [" ".join(run.tokens[i][s:t]), round(w, 4)] for s, t, w in e.phrases
                    ],
                    "truncated": int(run.lengths[i]) > len(run.tokens[i]),
                }
            )
        return cls(k, items)

    def to_json(self) -> dict[str, Any]:
        return jsonable({"k": self.k, "items": self.items})


@dataclass
class Comparison:
    """Section 6: the same samples under another version."""

    versions: list[str]
    losses: tuple[np.ndarray, np.ndarray]
    accuracy: list[float]
    mean_loss: list[float]
    mean_loss_reduction: float
    median_per_sample_loss_change: float
    lower_loss_samples: list[int]
    both_right: int
    only_first_right: int
    only_second_right: int
    both_wrong: int
    sentences: list[str]
    #: Accuracy of both versions' answers (their calibration applied) per length bin of the
    #: reviews, and on single sentences cut from them (``by_length``).
    by_length: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def compute(
        cls,
        main: Run,
        other: Run,
        labels: np.ndarray,
        by_length: list[dict[str, Any]] | None = None,
    ) -> Comparison:
        a, b = main.loss(labels), other.loss(labels)
        ca, cb = main.pred == labels, other.pred == labels
        reduction = 1.0 - float(a.mean()) / max(float(b.mean()), EPS)
        first, second = main.model_version, other.model_version
        return cls(
            versions=[first, second],
            losses=(a, b),
            accuracy=[float(ca.mean()), float(cb.mean())],
            mean_loss=[float(a.mean()), float(b.mean())],
            mean_loss_reduction=reduction,
            median_per_sample_loss_change=float(np.median(a - b)),
            lower_loss_samples=[int((a < b).sum()), int((b < a).sum())],
            both_right=int((ca & cb).sum()),
            only_first_right=int((ca & ~cb).sum()),
            only_second_right=int((~ca & cb).sum()),
            both_wrong=int((~ca & ~cb).sum()),
            sentences=[
                f"{first} has a {'lower' if reduction > 0 else 'higher'} mean loss than "
                f"{second}: {a.mean():.4f} vs {b.mean():.4f} ({abs(reduction):.0%} "
                f"{'less' if reduction > 0 else 'more'}); accuracy {ca.mean():.2%} vs "
                f"{cb.mean():.2%}.",
                f"Per sample, {first} has the lower loss on {(a < b).mean():.0%} of the "
                f"reviews; it alone is right on {int((ca & ~cb).sum())}, {second} alone on "
                f"{int((~ca & cb).sum())}.",
            ],
            by_length=by_length or [],
        )

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {
                "versions": self.versions,
                "accuracy": self.accuracy,
                "mean_loss": self.mean_loss,
                "mean_loss_reduction": self.mean_loss_reduction,
                "median_per_sample_loss_change": self.median_per_sample_loss_change,
                "lower_loss_samples": self.lower_loss_samples,
                "both_right": self.both_right,
                "only_first_right": self.only_first_right,
                "only_second_right": self.only_second_right,
                "both_wrong": self.both_wrong,
                "sentences": self.sentences,
                "by_length": self.by_length,
            }
        )


#: Token-count bins of the per-length comparison; the first is what chat users send.
LENGTH_BINS = ((1, 48), (49, 150), (151, 300), (301, 600), (601, None))


def by_length(
    versions: Sequence[str],
    answers: Sequence[np.ndarray],
    lengths: np.ndarray,
    labels: np.ndarray,
    short: tuple[Sequence[np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Per length bin (and for ``short``: single sentences), each version's accuracy and share
    answered positive, and the gain of the first over the second in points.

    ``answers`` are each version's P(positive) on the samples, ``lengths`` their token counts;
    ``short`` is (each version's P(positive) on the sentences, the sentences' labels).
    """
    groups: list[tuple[str, list[np.ndarray], np.ndarray]] = []
    if short is not None:
        groups.append(("single sentences", list(short[0]), short[1]))
    for low, high in LENGTH_BINS:
        keep = (lengths >= low) & (lengths <= (high if high is not None else np.inf))
        name = f"{low}-{high} tokens" if high is not None else f"over {low - 1} tokens"
        groups.append((name, [a[keep] for a in answers], labels[keep]))
    rows = []
    for name, probs, truth in groups:
        if not len(truth):
            continue
        accuracy = [float(((p > 0.5) == truth).mean()) for p in probs]
        row: dict[str, Any] = {"texts": name, "n": len(truth)}
        for version, acc, p in zip(versions, accuracy, probs, strict=True):
            row[f"accuracy {version}"] = acc
            row[f"answered positive {version}"] = float((p > 0.5).mean())
        row["gain (points)"] = 100 * (accuracy[0] - accuracy[1])
        rows.append(row)
    return rows
