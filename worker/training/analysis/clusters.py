"""Section 3 of the report: k-means clusters of the latent space, and what characterises them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.training.analysis.run import SUBSAMPLE, Run, jsonable, subsample


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
        sample = subsample(len(reduced), SUBSAMPLE)
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
