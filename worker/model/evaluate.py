"""Classification metrics and the training plots (training curves, confusion matrix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.schema import LABELS


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, mean log loss, confusion matrix (rows = truth) and per-class P/R/F1."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1.0)
    predicted = probs.argmax(axis=1)
    n_classes = len(LABELS)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class: dict[str, dict[str, float]] = {}
    for k, name in enumerate(LABELS):
        tp = confusion[k, k]
        precision = tp / max(confusion[:, k].sum(), 1)
        recall = tp / max(confusion[k, :].sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[k, :].sum()),
        }
    return {
        "n": len(labels),
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "loss": float(-np.log(probs[np.arange(len(labels)), labels]).mean())
        if len(labels)
        else 0.0,
        "confusion_matrix": confusion.tolist(),
        "labels": list(LABELS),
        "errors": int((predicted != labels).sum()),
        "per_class": per_class,
    }


def plot_training_curves(history: dict[str, Any], path: Path) -> None:
    """Per-batch (thin) and per-epoch (markers) loss and accuracy, training and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    batches = history.get("batches", [])
    epochs = history.get("epochs", [])
    steps_per_epoch = max(1, len(batches) // max(1, len(epochs)))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        if batches:
            ax.plot(
                [b["step"] / steps_per_epoch for b in batches],
                [b[metric] for b in batches],
                lw=0.6,
                alpha=0.5,
                label=f"train {metric} (batch)",
            )
        for key, style in ((metric, "o-"), (f"val_{metric}", "s-")):
            values = [e[key] for e in epochs if key in e]
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=f"{key} (epoch)")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(metrics: dict[str, Any], path: Path, title: str = "test split") -> None:
    """The confusion matrix with counts and row shares, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(
            j,
            i,
            f"{value}\n{value / max(matrix[i].sum(), 1):.1%}",
            ha="center",
            va="center",
            color=color,
        )
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: accuracy {metrics['accuracy']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
