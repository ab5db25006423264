"""The report's sections, computed: one dataclass per section, each with ``to_json()``.

The arrays a section keeps for its plots (the 2-D map, cluster assignment, per-sample losses)
are fields like any other; ``to_json()`` leaves them out and keeps every number the report shows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.datasets import Review
from shared.schema import LABELS

EPS = 1e-7
#: Samples drawn for silhouettes and k selection (the full split would cost minutes).
SUBSAMPLE = 3000


def jsonable(value: Any) -> Any:
    """JSON-ready: NumPy scalars and arrays converted, non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Run:
    """One model version's pass over the labelled samples."""

    model_version: str
    probs: np.ndarray  # (N, 2)
    features: np.ndarray  # (N, D) the layer before the classifier
    lengths: np.ndarray  # tokens in the review (before truncation)
    oov: np.ndarray
    rows: list[list[int]]
    tokens: list[list[str]]

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def loss(self, labels: np.ndarray) -> np.ndarray:
        return -np.log(np.clip(self.probs[np.arange(len(labels)), labels], EPS, 1.0))


def forward(served: Any, texts: Sequence[str], desc: str = "") -> Run:
    """Probabilities and latent features for every text (the predictor's batched forward)."""
    import keras
    import tensorflow as tf

    from worker.model.cnn import FEATURES_LAYER
    from worker.model.predictor import run_batched

    predictor = served.predictor
    model = predictor.model
    both = keras.Model(model.inputs, [model.get_layer(FEATURES_LAYER).output, model.outputs[0]])
    run = tf.function(
        lambda ids: both(ids, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    encoded = predictor.encode(list(texts))
    rows = [e.ids for e in encoded]
    features, probs = run_batched(run, rows, progress=desc or "forward")
    return Run(
        model_version=served.model_version,
        probs=probs.astype(np.float64),
        features=features,
        lengths=np.array([e.n_tokens for e in encoded]),
        oov=np.array([e.oov_count for e in encoded]),
        rows=rows,
        tokens=[e.tokens for e in encoded],
    )


def _subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


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
        sample = _subsample(len(xy), SUBSAMPLE)
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


def document_terms(rows: Sequence[Sequence[int]], vocab_size: int) -> Any:
    """Binary document-term matrix (CSR) of the encoded reviews."""
    from scipy import sparse

    sets = [np.fromiter(set(r), dtype=np.int64) for r in rows]
    indptr = np.cumsum([0, *(len(x) for x in sets)])
    indices = np.concatenate(sets) if sets else np.zeros(0, dtype=np.int64)
    return sparse.csr_matrix(
        (np.ones(len(indices)), indices, indptr), shape=(len(rows), vocab_size)
    )


def characteristic_words(
    docs: Any, overall: np.ndarray, members: np.ndarray, vocab_tokens: Sequence[str], k: int = 8
) -> list[str]:
    """Words whose document frequency in the cluster most exceeds their overall frequency."""
    n = docs.shape[0]
    inside = np.asarray(docs[members].sum(axis=0)).ravel()
    n_in = max(len(members), 1)
    score = np.log((inside + 1) / (n_in + 2)) - np.log((overall + 1) / (n + 2))
    score[inside < max(3, 0.02 * n_in)] = -np.inf
    score[:2] = -np.inf  # PAD, OOV
    top = np.argsort(-score)[:k]
    return [vocab_tokens[i] for i in top if np.isfinite(score[i])]


@dataclass
class Clusters:
    """Section 3: k-means on the latent space, k by silhouette, hard clusters called out."""

    assignment: np.ndarray
    k: int
    silhouette_by_k: dict[str, float]
    clusters: list[dict[str, Any]]
    hard_clusters: list[int]
    sentences: list[str]

    @classmethod
    def compute(
        cls, run: Run, labels: np.ndarray, loss: np.ndarray, vocab_tokens: Sequence[str]
    ) -> Clusters:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA
        from sklearn.metrics import silhouette_score

        reduced = PCA(n_components=min(20, run.features.shape[1]), random_state=0).fit_transform(
            run.features.astype(np.float64)
        )
        sample = _subsample(len(reduced), SUBSAMPLE)
        tried = {}
        for k in range(3, 9):
            if k >= len(sample):
                break
            fit = KMeans(n_clusters=k, n_init=3, random_state=0).fit(reduced[sample])
            tried[k] = float(silhouette_score(reduced[sample], fit.labels_))
        best_k = max(tried, key=lambda k: tried[k]) if tried else 2
        assignment = KMeans(n_clusters=best_k, n_init=3, random_state=0).fit_predict(reduced)
        correct = run.pred == labels
        overall_loss, overall_acc = float(loss.mean()), float(correct.mean())
        docs = document_terms(run.rows, len(vocab_tokens))
        in_all = np.asarray(docs.sum(axis=0)).ravel()
        clusters: list[dict[str, Any]] = []
        for c in range(best_k):
            members = np.flatnonzero(assignment == c)
            if not len(members):
                continue
            accuracy, mean_loss = float(correct[members].mean()), float(loss[members].mean())
            clusters.append(
                {
                    "cluster": c,
                    "size": len(members),
                    "mean_loss": mean_loss,
                    "accuracy": accuracy,
                    "positive_share": float(labels[members].mean()),
                    "mean_oov": float(run.oov[members].mean()),
                    "mean_length": float(run.lengths[members].mean()),
                    "words": characteristic_words(docs, in_all, members, vocab_tokens),
                    "hard": accuracy < overall_acc - 0.05 or mean_loss > 1.5 * overall_loss,
                }
            )
        hard = [c for c in clusters if c["hard"]]
        sentences = [
            f"k = {best_k}, the best silhouette among k = 3..8 on a {SUBSAMPLE:,}-sample "
            f"subsample ({tried.get(best_k, 0.0):.3f}), k-means on the first 20 principal "
            "components.",
            (
                "Unusually hard: "
                + "; ".join(
                    f"cluster {c['cluster']} ({c['size']} reviews, accuracy {c['accuracy']:.1%}, "
                    f"mean loss {c['mean_loss']:.3f} vs {overall_loss:.3f} overall)"
                    for c in hard
                )
                + "."
                if hard
                else "No cluster is unusually hard (accuracy within 5 points of the overall "
                f"{overall_acc:.1%}, mean loss under 1.5x the overall {overall_loss:.3f})."
            ),
        ]
        return cls(
            assignment,
            best_k,
            {str(k): v for k, v in tried.items()},
            clusters,
            [int(c["cluster"]) for c in hard],
            sentences,
        )

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {
                "k": self.k,
                "silhouette_by_k": self.silhouette_by_k,
                "clusters": self.clusters,
                "hard_clusters": self.hard_clusters,
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
        from tqdm import tqdm

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
            blobs = [
                TextBlob(r.text).sentiment for r in tqdm(reviews, desc="textblob", unit=" reviews")
            ]
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

    @classmethod
    def compute(cls, main: Run, other: Run, labels: np.ndarray) -> Comparison:
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
            }
        )
