"""The training recipe: prepare -> fit -> fit_ngram -> evaluate -> publish.

``train(config, settings)`` reads a labelled dataset (aclImdb directory or tarball, CSV, JSONL),
builds the vocabulary on the training part, trains the chosen architecture with a seeded,
shuffled validation split and early stopping on validation loss, fits the n-gram branch and the
blend (``kim_ngram``), evaluates on the test split and publishes a version into the model store
(atomically; ``min_accuracy`` refuses a worse model and leaves LATEST alone).

The run's settings are ``worker.training.config.TrainConfig``; the data step is
``worker.training.data``, the manifest and the store's files ``worker.training.publish``.
The command line is ``sentiment-train`` (``worker.training.commands.train``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from shared.config import Settings
from shared.store import ModelStore, Published
from worker.model import CROPS_ARCHITECTURE
from worker.training.config import TrainConfig
from worker.training.data import Prepared, prepare
from worker.training.publish import describe, publish
from worker.training.unlabelled import (
    Unlabelled,
    pretrain_embeddings,
    pseudo_labelled_crops,
    read_unlabelled,
)

log = structlog.get_logger(__name__)

#: kim_ngram_crops: the CNN also sees this many sentence crops per fitting review (sampled,
#: seeded), so a one-line message is in-distribution for the convolutions too.
CNN_CROPS_PER_REVIEW = 2
#: Batch size for evaluation passes (no gradients: larger batches are cheaper).
EVAL_BATCH_SIZE = 256


@dataclass
class TrainResult:
    """What a run produced: its metrics and manifest, and the version if it was published."""

    metrics: dict[str, Any]
    manifest: dict[str, Any]
    published: Published | None


class _History:
    """Keras callback collecting per-batch and per-epoch logs (created lazily: imports Keras)."""

    @staticmethod
    def create() -> Any:
        import keras

        class History(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.batches: list[dict[str, float]] = []
                self.epochs: list[dict[str, float]] = []
                self._epoch = 0

            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self._epoch = epoch

            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                logs = logs or {}
                self.batches.append(
                    {
                        "step": len(self.batches) + 1,
                        "epoch": self._epoch + 1,
                        "loss": float(logs.get("loss", np.nan)),
                        "accuracy": float(logs.get("accuracy", np.nan)),
                    }
                )

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
                self.epochs.append(entry)
                log.info("epoch_finished", **entry)

        return History()


def fit(
    built: Any, prepared: Prepared, config: TrainConfig, unlabelled: Unlabelled | None = None
) -> dict[str, Any]:
    """Train the network part by gradient descent; return the per-batch and per-epoch history.

    Distilling, as many of the reviews the teacher labelled as there are fitting reviews join
    them (a seeded sample), so an epoch costs at most twice as much.
    """
    import keras

    from worker.model.batching import BucketedBatches
    from worker.model.cnn import compile_for_training

    compile_for_training(built.trainable, config.learning_rate)
    history = _History.create()
    rows, labels = prepared.fit_rows, prepared.y_fit
    if len(prepared.fit_crops):
        n = min(len(prepared.fit_crops), CNN_CROPS_PER_REVIEW * len(rows))
        pick = np.random.default_rng(config.seed).choice(len(prepared.fit_crops), n, replace=False)
        rows = rows + [prepared.fit_crops[i] for i in pick]
        labels = np.concatenate([labels, prepared.y_crops[pick]])
    if unlabelled is not None and unlabelled.teacher_rows:
        n = min(len(unlabelled.teacher_rows), len(prepared.fit_rows))
        rng = np.random.default_rng(config.seed + 1)
        pick = rng.choice(len(unlabelled.teacher_rows), n, replace=False)
        rows = rows + [unlabelled.teacher_rows[i] for i in pick]
        labels = np.concatenate([labels, unlabelled.teacher_labels[pick]])
        assert unlabelled.teacher_info is not None
        unlabelled.teacher_info["network_reviews"] = n
    built.trainable.fit(
        BucketedBatches(rows, labels, config.batch_size, seed=config.seed),
        validation_data=BucketedBatches(
            prepared.val_rows, prepared.y_val, EVAL_BATCH_SIZE, seed=config.seed, shuffle=False
        ),
        epochs=config.epochs,
        callbacks=[
            history,
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=True
            ),
        ],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    return {"batches": history.batches, "epochs": history.epochs}


def fit_ngram(
    built: Any,
    prepared: Prepared,
    hp: Any,
    unlabelled: Unlabelled | None = None,
    pseudo_label: bool = True,
) -> dict[str, Any]:
    """Fit the NB-LR table(s) on the fitting part, then the blend weights on validation.

    The blend is fitted on validation, which no branch was trained on: on the fitting part every
    branch is overconfident and the blend would trust the wrong one.  ``kim_ngram_crops`` fits a
    second table on sentence crops and two blends: long texts on the validation reviews, short
    ones on a sentence of each validation review (plus any short review), class-balanced.
    """
    from worker.model.cnn import BLEND_LAYER, CROP_BAG_LAYER, LENGTH_BLEND_LAYER, NGRAM_BAG_LAYER
    from worker.model.ngrams import bag_scores, fit_nb_logreg
    from worker.model.predictor import batched_probs, make_forward

    started = time.perf_counter()
    vocab_size = len(prepared.vocab)
    rows, labels = prepared.fit_rows, prepared.y_fit
    if unlabelled is not None and unlabelled.teacher_rows:  # distilling: the teacher's reviews too
        rows = rows + unlabelled.teacher_rows
        labels = np.concatenate([labels, unlabelled.teacher_labels])
    table, intercept = fit_nb_logreg(rows, labels, vocab_size, hp.buckets)
    built.model.get_layer(NGRAM_BAG_LAYER).set_weights([table])
    forward = make_forward(built.trainable)

    def features(rows: list[list[int]], tables: list[np.ndarray]) -> np.ndarray:
        cnn = log_odds(batched_probs(forward, rows))
        bags = [bag_scores(rows, t, vocab_size, hp.buckets) for t in tables]
        return np.stack([cnn, *bags], axis=1)

    if not len(prepared.fit_crops):
        coef = _blend(features(prepared.val_rows, [table]), prepared.y_val, balanced=False)
        built.model.get_layer(BLEND_LAYER).set_weights([np.array(coef, dtype=np.float32)])
        log.info("ngram_branch_fitted", seconds=round(time.perf_counter() - started, 1), blend=coef)
        return {"table": table, "intercept": intercept, "blend": coef}
    crop_rows, crop_labels, pseudo = prepared.fit_crops, prepared.y_crops, None
    if pseudo_label and unlabelled is not None and unlabelled.texts:
        extra, extra_labels, pseudo = pseudo_labelled_crops(
            unlabelled, prepared, table, intercept, hp.buckets, prepared.head_fraction
        )
        crop_rows, crop_labels = crop_rows + extra, np.concatenate([crop_labels, extra_labels])
    crops, crop_intercept = fit_nb_logreg(crop_rows, crop_labels, vocab_size, hp.buckets)
    built.model.get_layer(CROP_BAG_LAYER).set_weights([crops])
    x_val = features(prepared.val_rows, [table, crops])
    x_short = features(prepared.val_short_rows, [table, crops])
    is_short = np.array([len(r) <= hp.short_tokens for r in prepared.val_rows])  # no PAD in rows
    long_coef = _blend(x_val[~is_short], prepared.y_val[~is_short], balanced=True)
    short_coef = _blend(
        np.concatenate([x_short, x_val[is_short]]),
        np.concatenate([prepared.y_val_short, prepared.y_val[is_short]]),
        balanced=True,
    )
    built.model.get_layer(LENGTH_BLEND_LAYER).set_weights(
        [np.array([short_coef, long_coef], dtype=np.float32)]
    )
    log.info(
        "ngram_branches_fitted",
        seconds=round(time.perf_counter() - started, 1),
        short=short_coef,
        long=long_coef,
    )
    return {
        "table": table,
        "crops_table": crops,
        "intercept": intercept,
        "crops_intercept": crop_intercept,
        "crops": len(prepared.fit_crops),
        "pseudo_labelled": pseudo,
        "blend": {"short": short_coef, "long": long_coef, "short_tokens": hp.short_tokens},
    }


def _blend(x: np.ndarray, y: np.ndarray, balanced: bool) -> list[float]:
    """Coefficients of each column then the intercept: a (nearly unregularised) logistic fit.

    Balanced: each class weighs the same, so a validation split that happens to lean to one
    class does not move the intercept (the splits and the users' texts are about balanced).
    A set with one class only (a tiny corpus) keeps the first column alone.
    """
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return [1.0] + [0.0] * x.shape[1]
    fit = LogisticRegression(C=1e4, class_weight="balanced" if balanced else None).fit(x, y)
    return [float(c) for c in fit.coef_[0]] + [float(fit.intercept_[0])]


def log_odds(probs: np.ndarray) -> np.ndarray:
    """log P(positive) - log P(negative), clipped away from infinities."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1.0)
    return np.log(p[:, 1]) - np.log(p[:, 0])


def evaluate(
    built: Any, prepared: Prepared, ngram: dict[str, Any], hp: Any
) -> tuple[Any, dict[str, Any]]:
    """The servable model and its metrics on validation, test and (kim_ngram) each branch."""
    import keras

    from worker.model.evaluate import classification_metrics
    from worker.model.ngrams import bag_scores
    from worker.model.predictor import batched_probs, make_forward

    # A fresh Model over the same layers: the saved file holds the serving graph only, without
    # the training model's compiled optimizer state.
    served = keras.Model(built.model.inputs, built.model.outputs, name=built.model.name)
    forward = make_forward(served)
    metrics: dict[str, Any] = {
        "validation": classification_metrics(
            prepared.y_val, batched_probs(forward, prepared.val_rows, progress="validate")
        )
    }
    if len(prepared.val_short_rows):  # one sentence of each validation review
        metrics["validation_sentences"] = classification_metrics(
            prepared.y_val_short, batched_probs(forward, prepared.val_short_rows)
        )
    if prepared.test_rows is not None and prepared.y_test is not None:
        rows, labels = prepared.test_rows, prepared.y_test
        metrics["test"] = classification_metrics(
            labels, batched_probs(forward, rows, progress="test")
        )
        if ngram:  # how much each branch contributes to the served blend
            cnn = batched_probs(make_forward(built.trainable), rows)
            bag = bag_scores(rows, ngram["table"], len(prepared.vocab), hp.buckets)
            metrics["test_components"] = {
                "cnn_only": float((cnn.argmax(axis=1) == labels).mean()),
                "ngram_only": float(((bag + ngram["intercept"] > 0) == labels).mean()),
            }
            if "crops_table" in ngram:
                crops = bag_scores(rows, ngram["crops_table"], len(prepared.vocab), hp.buckets)
                metrics["test_components"]["crops_ngram_only"] = float(
                    ((crops + ngram["crops_intercept"] > 0) == labels).mean()
                )
    return served, metrics


def train(config: TrainConfig, settings: Settings, store: ModelStore | None = None) -> TrainResult:
    """Run the whole recipe; publish unless ``config.publish`` is off."""
    import keras

    from worker.model.cnn import NGRAM_ARCHITECTURES, HParams, build_model
    from worker.model.predictor import configure_tensorflow

    started = time.perf_counter()
    configure_tensorflow(settings.tf_threads)
    keras.utils.set_random_seed(config.seed)
    prepared = prepare(config, settings)
    hp = HParams.from_json(config.hparams)
    built = build_model(config.arch, len(prepared.vocab), hp)
    pretrained = None
    unlabelled = Unlabelled(None, [], [])
    if (
        config.pretrain == "word2vec"
        or (config.pseudo_label and config.arch == CROPS_ARCHITECTURE)
        or config.soft_labels is not None
    ):
        unlabelled = read_unlabelled(config, prepared)
    if config.pretrain == "word2vec":
        pretrained = pretrain_embeddings(built, config, prepared, hp, unlabelled)
    history = fit(built, prepared, config, unlabelled)
    ngram = {}
    if config.arch in NGRAM_ARCHITECTURES:
        ngram = fit_ngram(built, prepared, hp, unlabelled, config.pseudo_label)
    served, metrics = evaluate(built, prepared, ngram, hp)
    seconds = time.perf_counter() - started
    manifest = describe(config, hp, prepared, history, metrics, seconds)
    manifest["training"]["ngram_branch"] = {
        k: v for k, v in ngram.items() if not k.endswith("table")
    } or None
    manifest["training"]["pretrained_embeddings"] = pretrained
    manifest["training"]["soft_labels"] = unlabelled.teacher_info
    log.info(
        "training_finished",
        seconds=round(seconds, 1),
        best_epoch=manifest["training"]["best_epoch"],
        **{
            k: {"accuracy": v["accuracy"], "loss": v["loss"]}
            for k, v in metrics.items()
            if "n" in v
        },
    )
    published = None
    if config.publish:
        store = store or ModelStore(settings.model_dir, settings.model_name)
        published = publish(store, served, prepared, manifest, metrics, history, config)
        if settings.model_store_url:  # workers on other hosts follow the remote LATEST
            from shared.remote import RemoteStore

            RemoteStore(settings.model_store_url, settings.model_name).upload(published)
    return TrainResult(metrics, manifest, published)
