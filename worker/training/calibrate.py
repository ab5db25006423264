"""Calibrated confidence for a published version, fitted on its own validation split.

The validation reviews are carved from the training data exactly as training carved them (same
reader, limit, seed and fraction: ``worker.training.data``), so nothing here touches the test
split.  The calibration sets are those reviews and one sentence of each (chat users send
sentences, on which the raw model leans positive).  A Platt fit on the positive-class log-odds,
``z / temperature + bias``, minimises the log loss of each: one pair for texts of at most
``SHORT_TOKENS`` tokens (fitted on the sentences), one for longer texts (fitted on the reviews).
``uncertain_below`` is the confidence under which an answer is flagged uncertain.

Reported for both kinds of text, before and after: expected calibration error (15 equal-width
confidence bins), accuracy, log loss and the share predicted positive; and a reliability
diagram.  The result is published as a new version (the same model files, the calibration in
the manifest, the diagram beside them); the source version is kept.
"""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.store import ModelStore, Published
from worker.model import SHORT_TOKENS
from worker.training.sentences import opinion_sentences_from, sentences_from

log = structlog.get_logger(__name__)

ECE_BINS = 15
DEFAULT_UNCERTAIN_BELOW = 0.6
#: A length class with fewer validation texts than this keeps the identity (T 1, bias 0).
MIN_TEXTS = 50


def ece(p_pos: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the predicted label's confidence."""
    confidence = np.maximum(p_pos, 1 - p_pos)
    correct = (p_pos > 0.5).astype(int) == labels
    edges = np.linspace(0.5, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0.5 else confidence <= hi
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def summary(z: np.ndarray, labels: np.ndarray, temperature: float, bias: float) -> dict[str, Any]:
    if len(labels) == 0:
        return {"n": 0}
    p = 1 / (1 + np.exp(-np.clip(z / temperature + bias, -60, 60)))
    eps = 1e-12
    return {
        "n": len(labels),
        "accuracy": round(float(((p > 0.5).astype(int) == labels).mean()), 4),
        "ece": round(ece(p, labels), 4),
        "log_loss": round(
            float(-np.mean(labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps))), 4
        ),
        "positive_share": round(float((p > 0.5).mean()), 4),
    }


def fit_platt(zs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[float, float]:
    """(temperature, bias) minimising the mean of each set's class-balanced log loss.

    Balanced: each class weighs half, so the fit assumes even odds whatever the validation
    split's mix (carved by movie, it can be 54% positive) and the bias does not learn that
    split's prior; IMDB's test split is balanced and chat users' messages are not known to lean.
    """
    from scipy.optimize import minimize

    def loss(params: np.ndarray) -> float:
        a, b = params
        total = 0.0
        for z, y in zip(zs, ys, strict=True):
            u = a * z + b
            per_text = np.logaddexp(0, u) - y * u
            classes = [per_text[y == c] for c in (0, 1) if (y == c).any()]
            total += float(np.mean([c.mean() for c in classes]))
        return total / len(zs)

    best = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-5})
    a, b = float(best.x[0]), float(best.x[1])
    if a <= 0:
        raise ValueError("calibration failed: the model's log-odds do not rank the labels")
    return 1.0 / a, b


@dataclass
class Calibrated:
    """The fitted pairs (``long``: reviews, ``short``: sentences) and the numbers behind them."""

    long: tuple[float, float]
    short: tuple[float, float]
    uncertain_below: float
    before: dict[str, Any]
    after: dict[str, Any]

    def params(self, name: str) -> tuple[float, float]:
        return self.short if name == "short" else self.long


def log_odds(served: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Positive-class log-odds and token counts of texts, as the worker computes them: short
    texts with negators, contrast words or ratings composed from their clauses
    (``worker.model.compose``) unless ``served.composed`` is off."""
    from worker.model.compose import recompose

    predictor = served.predictor
    encoded = predictor.encode(texts)
    z = np.zeros(len(texts))
    # Short texts are composed from their explanation, which is also their forward pass.
    short = [i for i, e in enumerate(encoded) if e.n_tokens <= SHORT_TOKENS]
    if not getattr(served, "composed", False):
        short = []
    rest = sorted(set(range(len(texts))) - set(short))
    if rest:
        probs = predictor.probs([encoded[i].ids for i in rest])
        p = np.clip(probs[:, 1], 1e-7, 1 - 1e-7)
        z[rest] = np.log(p / (1 - p))
    if short:
        explained = served.explainer.explain_ids([encoded[i].ids for i in short])
        chosen = [texts[i] for i in short], [encoded[i] for i in short]
        recompose(*chosen, explained, 0, served.polarity())
        z[short] = [e.log_odds for e in explained]
    return z, np.array([e.n_tokens for e in encoded])


def answer_probs(served: Any, texts: list[str], calibration: Any = None) -> np.ndarray:
    """Positive probabilities as the worker answers them (``calibration``, by default the
    version's own, applied per text length)."""
    cal = calibration if calibration is not None else served.calibration
    z, n_tokens = log_odds(served, texts)
    return calibrated(z, n_tokens, cal)


def calibrated(z: np.ndarray, n_tokens: np.ndarray, cal: Any) -> np.ndarray:
    """P(positive) from raw positive-class log-odds, ``cal``'s pair chosen per text length."""
    pairs = np.array([cal.params(int(n)) for n in n_tokens]).reshape(-1, 2)
    return 1 / (1 + np.exp(-np.clip(z / pairs[:, 0] + pairs[:, 1], -60, 60)))


def test_metrics(p_pos: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The manifest's test numbers for a calibrated version (reporting only)."""
    eps = 1e-12
    return {
        "n": len(labels),
        "accuracy": float(((p_pos > 0.5).astype(int) == labels).mean()),
        "loss": float(
            -np.mean(labels * np.log(p_pos + eps) + (1 - labels) * np.log(1 - p_pos + eps))
        ),
        "ece": ece(p_pos, labels),
    }


def calibrate(
    served: Any,
    full: tuple[list[str], np.ndarray],
    seed: int,
    uncertain_below: float,
    by_sentence: bool = False,
) -> tuple[Calibrated, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The pairs of ``served``; ``by_sentence``: its sentences labelled by what each says
    (``worker.training.sentences.opinion_sentences_from``, as a version trained with sentence
    labels fits its short-text blend), else like their review."""
    texts, labels = full
    pick = opinion_sentences_from if by_sentence else sentences_from
    short, y_short = pick(texts, labels, len(texts), seed)
    z_full, n_full = log_odds(served, texts)
    z_short, n_short = log_odds(served, short)
    # Each set keeps the texts whose length routes them to its pair, as the worker will.
    keep_full, keep_short = n_full > SHORT_TOKENS, n_short <= SHORT_TOKENS
    sets = {
        "full": (z_full[keep_full], labels[keep_full]),
        "short": (z_short[keep_short], y_short[keep_short]),
    }
    long_pair, short_pair = (
        fit_platt([sets[name][0]], [sets[name][1]])
        if len(sets[name][1]) >= MIN_TEXTS
        else (1.0, 0.0)  # too few texts of that length to fit anything: left as it is
        for name in ("full", "short")
    )
    cal = Calibrated(long_pair, short_pair, uncertain_below, {}, {})
    for name, (z, y) in sets.items():
        t, b = cal.params(name)
        cal.before[name] = summary(z, y, 1.0, 0.0)
        cal.after[name] = summary(z, y, t, b)
        if len(y):
            p = 1 / (1 + np.exp(-np.clip(z / t + b, -60, 60)))
            cal.after[name]["uncertain_share"] = round(
                float((np.maximum(p, 1 - p) < uncertain_below).mean()), 4
            )
    return cal, sets


def plot_reliability(
    sets: dict[str, tuple[np.ndarray, np.ndarray]], cal: Calibrated, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.5))
    edges = np.linspace(0.5, 1.0, ECE_BINS + 1)
    for ax, (name, (z, y)) in zip(np.atleast_1d(axes), sets.items(), strict=True):
        for label, (t, b) in (("raw", (1.0, 0.0)), ("calibrated", cal.params(name))):
            p = 1 / (1 + np.exp(-np.clip(z / t + b, -60, 60)))
            conf = np.maximum(p, 1 - p)
            correct = (p > 0.5).astype(int) == y
            xs, ys = [], []
            for lo, hi in itertools.pairwise(edges):
                inside = (conf > lo) & (conf <= hi)
                if inside.sum() >= 5:
                    xs.append(conf[inside].mean())
                    ys.append(correct[inside].mean())
            ece_value = (cal.before if label == "raw" else cal.after)[name].get("ece")
            shown = f"ECE {ece_value:.3f}" if ece_value is not None else "no texts"
            ax.plot(xs, ys, marker="o", label=f"{label} ({shown})")
        ax.plot([0.5, 1], [0.5, 1], "k--", linewidth=1, label="perfect")
        ax.set_title(f"{name} texts (validation)")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def as_served_calibration(cal: Calibrated) -> Any:
    from worker.model.served import Calibration

    return Calibration(
        temperature=cal.long[0],
        bias=cal.long[1],
        uncertain_below=cal.uncertain_below,
        short_tokens=SHORT_TOKENS,
        short_temperature=cal.short[0],
        short_bias=cal.short[1],
    )


def publish_calibrated(
    store: ModelStore,
    source: Published,
    cal: Calibrated,
    sets: dict[str, Any],
    test: dict[str, Any] | None = None,
) -> Published:
    """A new version: the source's files, the calibration in the manifest, the diagram."""

    def write(folder: Path) -> dict[str, Any]:
        for file in source.path.iterdir():
            if file.is_file() and file.name != "manifest.json":
                shutil.copy(file, folder / file.name)
                (folder / file.name).chmod(0o644)
        plot_reliability(sets, cal, folder / "reliability.png")
        (folder / "calibration.json").write_text(
            json.dumps({"before": cal.before, "after": cal.after}, indent=2) + "\n"
        )
        skip = ("files", "version", "created", "format", "name")
        manifest = {k: v for k, v in source.manifest.items() if k not in skip}
        manifest["calibration"] = {
            "temperature": round(cal.long[0], 6),
            "bias": round(cal.long[1], 6),
            "short": {
                "max_tokens": SHORT_TOKENS,
                "temperature": round(cal.short[0], 6),
                "bias": round(cal.short[1], 6),
            },
            "uncertain_below": cal.uncertain_below,
            "fitted_on": "validation split of the training data: reviews, and a sentence of each",
            "from_version": source.version,
            "validation": {"before": cal.before, "after": cal.after},
        }
        if test is not None:  # the calibrated answers' own test numbers (reporting only)
            manifest["metrics"] = {**manifest.get("metrics", {}), "test": test}
        return manifest

    return store.publish(write)


def validation_reviews(source: Published, data: Path) -> tuple[list[str], np.ndarray]:
    """The version's validation reviews, rebuilt as training carved them (checked by the
    training data's fingerprint)."""
    from shared.datasets import DataError
    from worker.training.data import VAL_BY_MOVIE, VAL_RANDOM, load_split, movies_of
    from worker.training.data import validation_split as carve

    training = source.manifest.get("training", {})
    recorded = source.manifest.get("data", {}).get("train") or {}
    seed, fraction = int(training["seed"]), float(training["val_fraction"])
    split = load_split(data, "train", int(recorded["n"]), seed)
    if split.source["fingerprint"] != recorded.get("fingerprint"):
        raise DataError(data, "not the data this version was trained on (fingerprint differs)")
    movies = None
    if training.get("val_split", VAL_RANDOM) == VAL_BY_MOVIE:
        movies = movies_of(data, split.reviews)
        if movies is None:
            raise DataError(data, "the version's validation split is by movie: no url lists here")
    val_seed = training.get("val_seed")  # a distilled run's: the teacher's
    val_seed = seed if val_seed is None else int(val_seed)
    val, _ = carve(len(split.reviews), val_seed, fraction, movies)
    return [split.reviews[i].text for i in val], split.labels[val]


def calibrate_version(
    store: ModelStore, version: str, data: Path, uncertain_below: float
) -> tuple[Published, Calibrated]:
    """Calibrate ``version`` on its validation split and publish the result (the trainer)."""
    from worker.model.served import load_served

    source = store.resolve(version, verify=True)
    texts, labels = validation_reviews(source, data)
    cal, sets = calibrate(
        load_served(store, version),
        (texts, labels),
        int(source.manifest["training"]["seed"]),
        uncertain_below,
        bool(source.manifest["training"].get("sentence_labels")),
    )
    return publish_calibrated(store, source, cal, sets), cal
