"""``sentiment-analyze``: the error analysis of a model version as one self-contained HTML report.

    sentiment-analyze                                   # LATEST on the 25k IMDB test split
    sentiment-analyze --model v0001 --data reviews.csv --out /tmp/report
    sentiment-analyze --model v0002 --compare v0001     # the same samples under two versions

Writes ``report.html`` (images embedded, no network), the PNGs, and ``analysis.json`` with every
number the report shows, into ``<version>/analysis/`` or ``--out``.  Sections: training, the
population map of the latent space (the layer before the classifier), unsupervised clusters,
loss against simple features of the text, heat maps of the highest-loss and of random samples,
and the comparison with another version.  Every number comes from this run; a missing optional
dependency (TextBlob) turns its part into a note, never a failure.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.config import settings_or_exit
from shared.datasets import DataError, Review, read_reviews
from shared.log import configure_logging
from shared.schema import LABELS
from shared.store import ModelStore, StoreError

log = structlog.get_logger(__name__)

EPS = 1e-7
SECTIONS = ("training", "population", "clusters", "data_exploration", "samples", "comparison")


@dataclass
class Run:
    """One model version's pass over the labelled samples."""

    version: str
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


def forward(served: Any, texts: Sequence[str], batch_size: int = 256, desc: str = "") -> Run:
    """Probabilities and latent features for every text, in length-bucketed batches."""
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from worker.cnn import FEATURES_LAYER
    from worker.data import length_batches, pad_batch

    predictor = served.predictor
    model = predictor.model
    both = keras.Model(model.inputs, [model.get_layer(FEATURES_LAYER).output, model.outputs[0]])
    run = tf.function(
        lambda ids: both(ids, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    encoded = predictor.encode(list(texts))
    rows = [e.ids for e in encoded]
    probs = np.zeros((len(rows), 2), dtype=np.float64)
    features: np.ndarray | None = None
    with tqdm(total=len(rows), desc=desc or "forward", unit=" reviews") as bar:
        for idx in length_batches([len(r) for r in rows], batch_size):
            feats, p = run(pad_batch([rows[i] for i in idx]))
            if features is None:
                features = np.zeros((len(rows), feats.shape[1]), dtype=np.float32)
            features[idx] = feats.numpy()
            probs[idx] = p.numpy()
            bar.update(len(idx))
    assert features is not None
    return Run(
        version=served.version,
        probs=probs,
        features=features,
        lengths=np.array([e.n_tokens for e in encoded]),
        oov=np.array([e.oov_count for e in encoded]),
        rows=rows,
        tokens=[e.tokens for e in encoded],
    )


# -- sections --------------------------------------------------------------------------------


def training_section(version_path: Path, labels: np.ndarray, run: Run) -> dict[str, Any]:
    from worker.evaluate import classification_metrics

    history_file = version_path / "history.json"
    history = json.loads(history_file.read_text()) if history_file.exists() else {}
    metrics = classification_metrics(labels, run.probs)
    return {
        "history": {"epochs": history.get("epochs", []), "batches": history.get("batches", [])},
        "evaluation": metrics,
        "errors": {
            "total": int((run.pred != labels).sum()),
            "false_positive": int(((run.pred == 1) & (labels == 0)).sum()),
            "false_negative": int(((run.pred == 0) & (labels == 1)).sum()),
        },
    }


def _subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def population_section(run: Run, labels: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(run.features.astype(np.float64))
    centroids = np.array([xy[labels == c].mean(axis=0) for c in (0, 1)])
    pooled_sd = float(np.sqrt(np.mean([xy[labels == c].var(axis=0).sum() for c in (0, 1)])))
    distance = float(np.linalg.norm(centroids[1] - centroids[0]) / max(pooled_sd, EPS))
    sample = _subsample(len(xy), 3000)
    silhouette = (
        float(silhouette_score(xy[sample], labels[sample])) if len(set(labels[sample])) > 1 else 0.0
    )
    worst = loss >= np.quantile(loss, 0.95)
    own = np.linalg.norm(xy - centroids[labels], axis=1)
    other = np.linalg.norm(xy - centroids[1 - labels], axis=1)
    nearer_other = float((other[worst] < own[worst]).mean()) if worst.any() else 0.0
    nearer_other_all = float((other < own).mean())
    explained = [float(v) for v in pca.explained_variance_ratio_]
    sentences = [
        f"The first two principal components of the {run.features.shape[1]}-dimensional latent "
        f"space explain {sum(explained):.0%} of its variance.",
        f"The classes' centroids lie {distance:.1f} pooled standard deviations apart "
        f"(silhouette of the true labels on the map: {silhouette:.2f}): "
        + ("a clear separation." if distance > 2 else "they overlap substantially."),
        f"Of the 5% highest-loss samples, {nearer_other:.0%} lie nearer the other class's centroid "
        f"(all samples: {nearer_other_all:.0%}): the worst errors are reviews the model places "
        + (
            "confidently among the other class."
            if nearer_other > 0.5
            else "near the boundary between the classes."
        ),
    ]
    return {
        "explained_variance": explained,
        "centroid_distance_sd": distance,
        "silhouette_true_labels": silhouette,
        "high_loss_nearer_other_class": nearer_other,
        "all_nearer_other_class": nearer_other_all,
        "high_loss_threshold": float(np.quantile(loss, 0.95)),
        "sentences": sentences,
        "_xy": xy,
    }


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


def clusters_section(
    run: Run, labels: np.ndarray, loss: np.ndarray, xy: np.ndarray, vocab_tokens: Sequence[str]
) -> dict[str, Any]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    reduced = PCA(n_components=min(20, run.features.shape[1]), random_state=0).fit_transform(
        run.features.astype(np.float64)
    )
    sample = _subsample(len(reduced), 3000)
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
    clusters = []
    for c in range(best_k):
        members = np.flatnonzero(assignment == c)
        if not len(members):
            continue
        accuracy, mean_loss = float(correct[members].mean()), float(loss[members].mean())
        stats: dict[str, Any] = {
            "cluster": c,
            "size": len(members),
            "mean_loss": float(loss[members].mean()),
            "accuracy": float(correct[members].mean()),
            "positive_share": float(labels[members].mean()),
            "mean_oov": float(run.oov[members].mean()),
            "mean_length": float(run.lengths[members].mean()),
            "words": characteristic_words(docs, in_all, members, vocab_tokens),
        }
        stats["hard"] = accuracy < overall_acc - 0.05 or mean_loss > 1.5 * overall_loss
        clusters.append(stats)
    hard = [c for c in clusters if c["hard"]]
    sentences = [
        f"k = {best_k}, the best silhouette among k = 3..8 on a 3,000-sample subsample "
        f"({tried.get(best_k, 0.0):.3f}), k-means on the first 20 principal components.",
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
    return {
        "k": best_k,
        "silhouette_by_k": {str(k): v for k, v in tried.items()},
        "clusters": clusters,
        "hard_clusters": [c["cluster"] for c in hard],
        "sentences": sentences,
        "_assignment": assignment,
    }


def _strength(rho: float) -> str:
    a = abs(rho)
    return "negligible" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong"


def _binned(name: str, values: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    distinct = np.unique(values)
    if len(distinct) <= 10:
        edges = [*distinct.tolist(), distinct[-1] + 1]
        which = np.searchsorted(distinct, values)
        labels_ = [f"{v:g}" for v in distinct]
    else:
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 9))).tolist()
        which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        labels_ = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(len(edges) - 1)]
    bins = []
    for b, label in enumerate(labels_):
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


def exploration_section(
    reviews: Sequence[Review], run: Run, labels: np.ndarray, loss: np.ndarray
) -> dict[str, Any]:
    from tqdm import tqdm

    correct = run.pred == labels
    features: dict[str, dict[str, Any]] = {
        "length (tokens)": _binned("length (tokens)", run.lengths.astype(float), loss, correct),
        "OOV count": _binned("OOV count", run.oov.astype(float), loss, correct),
    }
    notes = []
    ratings = np.array([r.rating if r.rating is not None else -1 for r in reviews])
    if (ratings >= 0).all():
        features["rating confidence |rating - 5|"] = _binned(
            "rating confidence |rating - 5|", np.abs(ratings - 5).astype(float), loss, correct
        )
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
        sentiments = [
            TextBlob(r.text).sentiment for r in tqdm(reviews, desc="textblob", unit=" reviews")
        ]
        polarity = np.array([s.polarity for s in sentiments])
        subjectivity = np.array([s.subjectivity for s in sentiments])
        features["TextBlob polarity"] = _binned("TextBlob polarity", polarity, loss, correct)
        features["TextBlob subjectivity"] = _binned(
            "TextBlob subjectivity", subjectivity, loss, correct
        )
    return {"features": features, "notes": notes}


def samples_section(
    served: Any, reviews: Sequence[Review], run: Run, labels: np.ndarray, loss: np.ndarray, k: int
) -> dict[str, Any]:
    worst = np.argsort(-loss, kind="stable")[:k]
    rng = np.random.default_rng(0)
    rest = np.setdiff1d(np.arange(len(loss)), worst)
    random_ = (
        np.sort(rng.choice(rest, size=min(k, len(rest)), replace=False))
        if len(rest)
        else np.array([], dtype=int)
    )
    chosen = [*worst.tolist(), *random_.tolist()]
    explained = served.explainer.explain_ids(
        [run.rows[i] for i in chosen], tokens=[run.tokens[i] for i in chosen], top_k=10
    )
    items = []
    for group_size, (i, e) in enumerate(zip(chosen, explained, strict=True)):
        sign = 1.0 if e.label == "positive" else -1.0
        toward_positive = [round(sign * w, 4) for w in e.token_weights]
        items.append(
            {
                "group": "highest loss" if group_size < len(worst) else "random",
                "id": reviews[i].id,
                "truth": LABELS[int(labels[i])],
                "predicted": LABELS[int(run.pred[i])],
                "scores": {LABELS[0]: float(run.probs[i, 0]), LABELS[1]: float(run.probs[i, 1])},
                "loss": float(loss[i]),
                "tokens": run.tokens[i],
                "weights_positive": toward_positive,  # the negative output's map is the negation
                "top_phrases": [
                    [" ".join(run.tokens[i][s:t]), round(w, 4)] for s, t, w in e.phrases
                ],
                "truncated": int(run.lengths[i]) > len(run.tokens[i]),
            }
        )
    return {"k": k, "items": items}


def comparison_section(main: Run, other: Run, labels: np.ndarray) -> dict[str, Any]:
    a, b = main.loss(labels), other.loss(labels)
    ca, cb = main.pred == labels, other.pred == labels
    reduction = 1.0 - float(a.mean()) / max(float(b.mean()), EPS)
    return {
        "versions": [main.version, other.version],
        "accuracy": [float(ca.mean()), float(cb.mean())],
        "mean_loss": [float(a.mean()), float(b.mean())],
        "mean_loss_reduction": reduction,
        "median_per_sample_loss_change": float(np.median(a - b)),
        "lower_loss_samples": [int((a < b).sum()), int((b < a).sum())],
        "both_right": int((ca & cb).sum()),
        "only_first_right": int((ca & ~cb).sum()),
        "only_second_right": int((~ca & cb).sum()),
        "both_wrong": int((~ca & ~cb).sum()),
        "sentences": [
            f"{main.version} has a {'lower' if reduction > 0 else 'higher'} mean loss than "
            f"{other.version}: {a.mean():.4f} vs {b.mean():.4f} ({abs(reduction):.0%} "
            f"{'less' if reduction > 0 else 'more'}); accuracy {ca.mean():.2%} vs {cb.mean():.2%}.",
            f"Per sample, {main.version} has the lower loss on {(a < b).mean():.0%} of the "
            "reviews; "
            f"it alone is right on {int((ca & ~cb).sum())}, {other.version} alone on "
            f"{int((~ca & cb).sum())}.",
        ],
        "_losses": (a, b),
    }


# -- plots and HTML --------------------------------------------------------------------------


def _plots(
    analysis: dict[str, Any], out: Path, labels: np.ndarray, loss: np.ndarray, run: Run
) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from worker.evaluate import plot_confusion, plot_training_curves

    paths: dict[str, Path] = {}
    history = analysis["training"]["history"]
    if history["epochs"]:
        paths["training_curves"] = out / "training_curves.png"
        plot_training_curves(history, paths["training_curves"])
    paths["confusion_matrix"] = out / "confusion_matrix.png"
    plot_confusion(
        analysis["training"]["evaluation"], paths["confusion_matrix"], "analysed samples"
    )
    size = 4 + 40 * np.clip(loss / max(float(np.quantile(loss, 0.99)), EPS), 0, 1)
    xy = analysis["population"]["_xy"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for c, color in ((0, "#d62728"), (1, "#2ca02c")):
        m = labels == c
        ax.scatter(
            xy[m, 0], xy[m, 1], s=size[m], c=color, alpha=0.35, label=LABELS[c], linewidths=0
        )
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Latent space: colour = ground truth, size = loss")
    ax.legend()
    paths["population_map"] = out / "population_map.png"
    fig.savefig(paths["population_map"], dpi=90, bbox_inches="tight")
    plt.close(fig)
    assignment = analysis["clusters"]["_assignment"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    oov_size = 4 + 8 * np.sqrt(run.oov)
    scatter = ax.scatter(
        xy[:, 0], xy[:, 1], c=assignment, cmap="tab10", s=oov_size, alpha=0.4, linewidths=0
    )
    ax.legend(*scatter.legend_elements(), title="cluster", loc="best", fontsize=8)
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Clusters: colour = cluster, size = OOV count")
    paths["cluster_map"] = out / "cluster_map.png"
    fig.savefig(paths["cluster_map"], dpi=90, bbox_inches="tight")
    plt.close(fig)
    features = analysis["data_exploration"]["features"]
    fig, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 3.6), squeeze=False)
    for ax, (name, feat) in zip(axes[0], features.items(), strict=True):
        bins = [b for b in feat["bins"] if b["count"]]
        x = np.arange(len(bins))
        ax.bar(x, [b["mean_loss"] for b in bins], color="#1f77b4")
        ax.set_xticks(x, [b["bin"] for b in bins], rotation=60, fontsize=7)
        ax.set_title(f"{name}\nρ = {feat['spearman_rho']:+.2f}", fontsize=9)
        ax.set_ylabel("mean loss")
        for xi, b in zip(x, bins, strict=True):
            ax.text(xi, b["mean_loss"], str(b["count"]), ha="center", va="bottom", fontsize=6)
    paths["loss_vs_features"] = out / "loss_vs_features.png"
    fig.savefig(paths["loss_vs_features"], dpi=90, bbox_inches="tight")
    plt.close(fig)
    if analysis.get("comparison"):
        a, b = analysis["comparison"]["_losses"]
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        ax.scatter(
            b, a, s=4, alpha=0.3, c=np.where(labels == 1, "#2ca02c", "#d62728"), linewidths=0
        )
        top = float(max(np.quantile(a, 0.995), np.quantile(b, 0.995), 0.1))
        ax.plot([0, top], [0, top], "k--", linewidth=1)
        first, second = analysis["comparison"]["versions"]
        ax.set(
            xlim=(0, top),
            ylim=(0, top),
            xlabel=f"loss, {second}",
            ylabel=f"loss, {first}",
            title="Per-sample loss (below the line: the first version is better)",
        )
        paths["comparison"] = out / "comparison.png"
        fig.savefig(paths["comparison"], dpi=90, bbox_inches="tight")
        plt.close(fig)
    return paths


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _heat(tokens: Sequence[str], weights: Sequence[float]) -> str:
    scale = max((abs(w) for w in weights), default=1.0) or 1.0
    spans = []
    for token, w in zip(tokens, weights, strict=True):
        a = min(1.0, abs(w) / scale)
        color = f"rgba(44,160,44,{a:.2f})" if w > 0 else f"rgba(214,39,40,{a:.2f})"
        spans.append(
            f'<span style="background:{color}" title="{w:+.3f}">{html.escape(token)}</span>'
        )
    return " ".join(spans)


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return html.escape(", ".join(map(str, v)))
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(analysis: dict[str, Any], images: dict[str, Path]) -> str:
    t = analysis["training"]
    ev = t["evaluation"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Analysis of {html.escape(analysis['model_version'])}</title>",
        "<style>body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}"
        ".sample{border:1px solid #ddd;padding:.6em;margin:.8em 0}.heat{line-height:1.9}"
        ".heat span{padding:1px 2px;border-radius:3px}h2{border-bottom:2px solid #eee}"
        "</style></head><body>",
        f"<h1>Model analysis: {html.escape(analysis['model_version'])}</h1>",
        f"<p>{analysis['n']:,} labelled samples from {html.escape(analysis['data'])}; "
        f"generated {html.escape(analysis['generated'])} in {analysis['seconds']:.0f} s.</p>",
        "<section id='training'><h2>1. Training</h2>",
    ]
    if "training_curves" in images:
        parts.append(_img(images["training_curves"], "training curves"))
    else:
        parts.append("<p>No training history was stored with this version.</p>")
    parts.append(
        f"<p>Accuracy on these samples <b>{ev['accuracy']:.2%}</b>, loss {ev['loss']:.4f}; "
        f"{t['errors']['total']:,} errors ({t['errors']['false_positive']:,} false positives, "
        f"{t['errors']['false_negative']:,} false negatives).</p>"
    )
    parts.append(_img(images["confusion_matrix"], "confusion matrix"))
    parts.append(
        _table(
            [{"class": c, **v} for c, v in ev["per_class"].items()],
            ["class", "precision", "recall", "f1", "support"],
        )
    )
    parts.append("</section><section id='population'><h2>2. Population exploration</h2>")
    parts.append(_img(images["population_map"], "population map"))
    parts.extend(f"<p>{html.escape(s)}</p>" for s in analysis["population"]["sentences"])
    parts.append("</section><section id='clusters'><h2>3. Unsupervised clustering</h2>")
    parts.append(_img(images["cluster_map"], "cluster map"))
    parts.extend(f"<p>{html.escape(s)}</p>" for s in analysis["clusters"]["sentences"])
    parts.append(
        _table(
            analysis["clusters"]["clusters"],
            [
                "cluster",
                "size",
                "accuracy",
                "mean_loss",
                "positive_share",
                "mean_oov",
                "mean_length",
                "hard",
                "words",
            ],
        )
    )
    parts.append("</section><section id='data_exploration'><h2>4. Data exploration</h2>")
    parts.append(_img(images["loss_vs_features"], "loss against features"))
    for feat in analysis["data_exploration"]["features"].values():
        parts.append(f"<p>{html.escape(feat['sentence'])}</p>")
    parts.extend(f"<p><i>{html.escape(n)}</i></p>" for n in analysis["data_exploration"]["notes"])
    parts.append("</section><section id='samples'><h2>5. Sample analysis</h2>")
    parts.append(
        "<p>Word heat maps from the workers' attribution (gradient × input on the log-odds plus "
        "the n-gram branch's exact shares): green pushes towards the output named, red against "
        "it; hover a word for its weight.</p>"
    )
    for item in analysis["samples"]["items"]:
        negative = [-w for w in item["weights_positive"]]
        phrases = ", ".join(f"“{p}”" for p, _ in item["top_phrases"]) or "none"
        parts.append(
            f"<div class='sample'><b>{html.escape(item['group'])}</b> · "
            f"id {html.escape(str(item['id']))} · "
            f"truth <b>{item['truth']}</b>, predicted <b>{item['predicted']}</b> "
            f"(P(positive) = {item['scores']['positive']:.3f}, loss {item['loss']:.3f})"
            f"{' · truncated' if item['truncated'] else ''}"
            "<p>Positive output:</p><div class='heat'>"
            f"{_heat(item['tokens'], item['weights_positive'])}</div>"
            f"<p>Negative output:</p><div class='heat'>{_heat(item['tokens'], negative)}</div>"
            f"<p>Top phrases: {html.escape(phrases)}</p></div>"
        )
    parts.append("</section><section id='comparison'><h2>6. Model comparison</h2>")
    comparison = analysis.get("comparison")
    if comparison:
        parts.append(_img(images["comparison"], "per-sample loss comparison"))
        parts.extend(f"<p>{html.escape(s)}</p>" for s in comparison["sentences"])
        parts.append(
            _table(
                [
                    {"": "both right", "samples": comparison["both_right"]},
                    {
                        "": f"only {comparison['versions'][0]} right",
                        "samples": comparison["only_first_right"],
                    },
                    {
                        "": f"only {comparison['versions'][1]} right",
                        "samples": comparison["only_second_right"],
                    },
                    {"": "both wrong", "samples": comparison["both_wrong"]},
                ],
                ["", "samples"],
            )
        )
    else:
        parts.append(
            "<p>Run with <code>--compare VERSION</code> to compare two versions on these "
            "samples.</p>"
        )
    parts.append("</section></body></html>")
    return "\n".join(parts)


def _public(value: Any) -> Any:
    """JSON-ready: drop the private arrays (keys starting with _), convert NumPy scalars."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_public(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def analyze(
    store: ModelStore,
    version: str,
    reviews: Sequence[Review],
    out: Path | None,
    compare: str | None = None,
    k: int = 10,
    data_name: str = "",
) -> tuple[Path, dict[str, Any]]:
    from worker.jobs import load_served

    started = time.monotonic()
    labelled = [r for r in reviews if r.error is None and r.label is not None]
    if len(labelled) < 10:
        raise DataError(
            data_name or "data", f"need at least 10 labelled reviews, got {len(labelled)}"
        )
    if compare:
        store.resolve(compare)  # fail before the long work if it does not exist
    served = load_served(store, version)
    resolved = store.resolve(version)
    out = out or resolved.path / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    labels = np.array([r.label for r in labelled], dtype=np.int64)
    texts = [r.text for r in labelled]
    run = forward(served, texts, desc=f"forward {served.version}")
    loss = run.loss(labels)
    analysis: dict[str, Any] = {
        "model_version": served.version,
        "data": data_name,
        "n": len(labelled),
        "skipped_unlabelled_or_unreadable": len(reviews) - len(labelled),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    analysis["training"] = training_section(resolved.path, labels, run)
    analysis["population"] = population_section(run, labels, loss)
    analysis["clusters"] = clusters_section(
        run, labels, loss, analysis["population"]["_xy"], served.predictor.vocab.tokens
    )
    analysis["data_exploration"] = exploration_section(labelled, run, labels, loss)
    analysis["samples"] = samples_section(served, labelled, run, labels, loss, k)
    analysis["comparison"] = None
    if compare:
        other = forward(load_served(store, compare), texts, desc=f"forward {compare}")
        analysis["comparison"] = comparison_section(run, other, labels)
    images = _plots(analysis, out, labels, loss, run)
    analysis["seconds"] = time.monotonic() - started
    analysis["images"] = {name: path.name for name, path in images.items()}
    (out / "report.html").write_text(render_html(analysis, images), encoding="utf-8")
    public = _public(analysis)
    (out / "analysis.json").write_text(
        json.dumps(public, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    log.info(
        "analysis_written", out=str(out), seconds=round(analysis["seconds"], 1), n=len(labelled)
    )
    return out, public


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_or_exit("sentiment-analyze")
    p = argparse.ArgumentParser(
        prog="sentiment-analyze",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--model", default="LATEST", help="version to analyse (default LATEST)")
    p.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    p.add_argument("--split", default="test", help="aclImdb split (default test)")
    p.add_argument("--compare", help="another version, run on the same samples")
    p.add_argument("--out", type=Path, help="output folder (default <version>/analysis)")
    p.add_argument("--samples", type=int, default=10, help="highest-loss and random samples shown")
    p.add_argument("--limit", type=int, help="analyse a seeded random subset of N reviews")
    p.add_argument("--model-dir", type=Path, default=settings.model_dir)
    p.add_argument("--model-name", default=settings.model_name)
    args = p.parse_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        reviews = list(read_reviews(args.data, split=args.split, errors="keep"))
        if args.limit and args.limit < len(reviews):  # a seeded random subset, in file order
            keep = np.sort(np.random.default_rng(0).choice(len(reviews), args.limit, replace=False))
            reviews = [reviews[i] for i in keep]
        out, analysis = analyze(
            ModelStore(args.model_dir, args.model_name),
            args.model,
            reviews,
            args.out,
            args.compare,
            args.samples,
            data_name=f"{args.data.name} ({args.split})"
            if args.data.suffix == ".gz" or args.data.is_dir()
            else args.data.name,
        )
    except (DataError, StoreError) as exc:
        print(f"sentiment-analyze: {exc}", file=sys.stderr)
        return 2
    print(
        f"{analysis['n']:,} samples, "
        f"accuracy {analysis['training']['evaluation']['accuracy']:.2%}, "
        f"{analysis['seconds']:.0f} s -> {out / 'report.html'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
