"""The report's figures, drawn with matplotlib (Agg) into PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.schema import LABELS
from worker.training.analysis.clusters import Clusters
from worker.training.analysis.run import EPS
from worker.training.analysis.sections import Comparison, Exploration, Population


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def population_map(
    population: Population, labels: np.ndarray, loss: np.ndarray, path: Path
) -> None:
    """The latent space: colour = ground truth, dot size = the sample's loss."""
    plt = _pyplot()
    size = 4 + 40 * np.clip(loss / max(float(np.quantile(loss, 0.99)), EPS), 0, 1)
    xy = population.xy
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for c, color in ((0, "#d62728"), (1, "#2ca02c")):
        m = labels == c
        ax.scatter(
            xy[m, 0], xy[m, 1], s=size[m], c=color, alpha=0.35, label=LABELS[c], linewidths=0
        )
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Latent space: colour = ground truth, size = loss")
    ax.legend()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def cluster_map(population: Population, clusters: Clusters, oov: np.ndarray, path: Path) -> None:
    """The same map coloured by cluster (dot size = OOV count)."""
    plt = _pyplot()
    xy = population.xy
    fig, ax = plt.subplots(figsize=(7, 5.5))
    scatter = ax.scatter(
        xy[:, 0],
        xy[:, 1],
        c=clusters.assignment,
        cmap="tab10",
        s=4 + 8 * np.sqrt(oov),
        alpha=0.4,
        linewidths=0,
    )
    ax.legend(*scatter.legend_elements(), title="cluster", loc="best", fontsize=8)
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Clusters: colour = cluster, size = OOV count")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def loss_vs_features(exploration: Exploration, path: Path) -> None:
    """Mean loss per bin of each feature, with the bin counts and Spearman's rho."""
    plt = _pyplot()
    features = exploration.features
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
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def comparison(comp: Comparison, labels: np.ndarray, path: Path) -> None:
    """Per-sample loss of the two versions (below the diagonal: the first is better)."""
    plt = _pyplot()
    a, b = comp.losses
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(b, a, s=4, alpha=0.3, c=np.where(labels == 1, "#2ca02c", "#d62728"), linewidths=0)
    top = float(max(np.quantile(a, 0.995), np.quantile(b, 0.995), 0.1))
    ax.plot([0, top], [0, top], "k--", linewidth=1)
    first, second = comp.versions
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel=f"loss, {second}",
        ylabel=f"loss, {first}",
        title="Per-sample loss (below the line: the first version is better)",
    )
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
