"""A trained run's record and files: the manifest (``describe``) and the version published
into the model store (``publish``: the model, vocabulary, metrics, history and plots, written
into the store's staging folder and published atomically)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from shared.schema import LABELS
from shared.store import MODEL_FILE, VOCAB_FILE, ModelStore, Published
from shared.text import PREPROCESSING

if TYPE_CHECKING:
    from worker.training.config import TrainConfig
    from worker.training.data import Prepared

log = structlog.get_logger(__name__)


def describe(
    config: TrainConfig,
    hp: Any,
    prepared: Prepared,
    history: dict[str, Any],
    metrics: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The manifest of a run: everything needed to load, check and reproduce the version."""
    epochs = history["epochs"]
    return {
        "architecture": config.arch,
        "hparams": hp.to_json(),
        "preprocessing": PREPROCESSING,
        "vocab": {"size": len(prepared.vocab), "fingerprint": prepared.vocab.fingerprint},
        "sequence_length": prepared.max_len,
        "head_fraction": config.head_fraction,
        "labels": list(LABELS),
        "data": prepared.sources,
        "training": {
            "epochs_run": len(epochs),
            "best_epoch": int(np.argmin([e.get("val_loss", np.inf) for e in epochs])) + 1,
            "max_epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "val_split": prepared.val_split,
            "val_seed": prepared.val_seed,
            "evaluation_texts_out": config.evaluation_texts_out,
            "sentence_labels": config.sentence_labels,
            "patience": config.patience,
            "train_reviews": len(prepared.fit_rows),
            "validation_reviews": len(prepared.val_rows),
            "seconds": round(seconds, 1),
        },
        # The manifest keeps the headline numbers; metrics.json has the confusion matrices.
        "metrics": {
            k: {m: v[m] for m in ("accuracy", "loss", "n")} if "n" in v else v
            for k, v in metrics.items()
        },
    }


def publish(
    store: ModelStore,
    served: Any,
    prepared: Prepared,
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    history: dict[str, Any],
    config: TrainConfig,
) -> Published:
    """Write the version's files into the store's staging folder and publish it atomically."""
    from worker.model.evaluate import plot_confusion, plot_training_curves

    def write(folder: Path) -> dict[str, Any]:
        served.save(folder / MODEL_FILE)
        prepared.vocab.save(folder / VOCAB_FILE)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (folder / "history.json").write_text(json.dumps(history) + "\n")
        plot_training_curves(history, folder / "training_curves.png")
        if "test" in metrics:
            plot_confusion(metrics["test"], folder / "confusion_matrix.png")
        return manifest

    published = store.publish(write, min_accuracy=config.min_accuracy)
    log.info("model_published", model_version=published.model_version, path=str(published.path))
    return published
