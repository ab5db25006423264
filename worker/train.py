"""Training job: ``sentiment-train`` / ``python -m worker.train``.

Reads a labelled dataset (aclImdb directory or tarball, CSV, JSONL), builds the vocabulary on the
training part, trains the chosen architecture with a seeded, shuffled validation split and early
stopping on validation loss, evaluates on the test split, and publishes a version into the model
store (atomically; ``--min-accuracy`` refuses a worse model and leaves LATEST alone).

Examples::

    sentiment-train                                    # served recipe on ../shared/data
    sentiment-train --data reviews.csv --test-data held_out.csv --arch kim --epochs 3
    sentiment-train --limit 2000 --epochs 1 --model-name scratch   # a quick smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.config import Settings, settings_or_exit
from shared.datasets import (
    ACLIMDB_ARCHIVE,
    LABELS,
    DataError,
    Review,
    detect_format,
    ensure_aclimdb,
    read_reviews,
)
from shared.log import configure_logging
from shared.store import MODEL_FILE, VOCAB_FILE, ModelStore, PublishRefused, StoreError, Version
from shared.text import PREPROCESSING, tokenize
from shared.vocab import DEFAULT_HEAD_FRACTION, Vocabulary

log = structlog.get_logger(__name__)

DEFAULT_ARCH = "kim_ngram"
DEFAULT_VOCAB_SIZE = 30_000
DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 64
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_PATIENCE = 1
DEFAULT_LENGTH_PERCENTILE = 95.0


@dataclass(frozen=True)
class TrainConfig:
    data: Path | None = None
    test_data: Path | None = None
    no_test: bool = False
    download: bool = False
    arch: str = DEFAULT_ARCH
    vocab_size: int = DEFAULT_VOCAB_SIZE
    seq_len: int | None = None
    head_fraction: float = DEFAULT_HEAD_FRACTION
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = 1e-3
    seed: int = 1
    val_fraction: float = DEFAULT_VAL_FRACTION
    patience: int = DEFAULT_PATIENCE
    limit: int | None = None
    pretrain: str = "none"
    unsup_data: Path | None = None
    min_accuracy: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    publish: bool = True


@dataclass
class Split:
    reviews: list[Review]
    tokens: list[list[str]]
    labels: np.ndarray
    source: dict[str, Any]


def _fingerprint(reviews: Sequence[Review]) -> str:
    digest = hashlib.sha256()
    for r in reviews:
        digest.update(f"{r.id}\t{r.label}\t{r.text}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def load_split(path: Path, split: str, limit: int | None, seed: int) -> Split:
    """Read, optionally subsample (seeded), and tokenize one labelled split, with progress."""
    from tqdm import tqdm

    reviews = [
        r
        for r in tqdm(
            read_reviews(path, split=split, labelled=True), desc=f"read {split}", unit=" reviews"
        )
        if r.text.strip()
    ]
    if not reviews:
        raise DataError(path, f"no labelled reviews in split {split!r}")
    if limit is not None and limit < len(reviews):
        keep = np.sort(np.random.default_rng(seed).choice(len(reviews), limit, replace=False))
        reviews = [reviews[i] for i in keep]
    tokens = [tokenize(r.text) for r in tqdm(reviews, desc=f"tokenize {split}", unit=" reviews")]
    labels = np.array([r.label for r in reviews], dtype=np.int64)
    source = {
        "path": str(path.name if path.is_file() else path),
        "split": split if detect_format(path).startswith("aclimdb") else None,
        "n": len(reviews),
        "positive": int(labels.sum()),
        "fingerprint": _fingerprint(reviews),
    }
    return Split(reviews, tokens, labels, source)


def _sequence_length(tokens: Sequence[Sequence[str]], requested: int | None) -> int:
    if requested is not None:
        return requested
    lengths = np.array([len(t) for t in tokens])
    return max(8, int(np.ceil(np.percentile(lengths, DEFAULT_LENGTH_PERCENTILE))))


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


def train(
    config: TrainConfig, settings: Settings, store: ModelStore | None = None
) -> dict[str, Any]:
    """Run the whole job; return ``{"metrics": ..., "version": Version | None}``."""
    import keras

    from worker.cnn import HParams, build_model, compile_for_training
    from worker.data import BucketedBatches, encode_texts
    from worker.evaluate import classification_metrics, plot_confusion, plot_training_curves
    from worker.predictor import Predictor, configure_tensorflow

    started = time.perf_counter()
    configure_tensorflow(settings.tf_threads)
    keras.utils.set_random_seed(config.seed)
    data_path = ensure_aclimdb(config.data, settings.data_dir, config.download)
    fmt = detect_format(data_path)
    train_split = load_split(data_path, "train", config.limit, config.seed)
    test_path = config.test_data or (data_path if fmt.startswith("aclimdb") else None)
    test_split = None
    if test_path is not None and not config.no_test:
        test_split = load_split(test_path, "test", config.limit, config.seed)

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(train_split.reviews))
    n_val = max(1, round(len(order) * config.val_fraction))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fit_tokens = [train_split.tokens[i] for i in fit_idx]
    vocab = Vocabulary.build(fit_tokens, config.vocab_size)
    max_len = _sequence_length(fit_tokens, config.seq_len)
    log.info(
        "vocabulary_built",
        size=len(vocab),
        sequence_length=max_len,
        train=len(fit_idx),
        validation=n_val,
    )

    encoded = encode_texts(train_split.tokens, vocab, max_len, config.head_fraction)
    rows = [e.ids for e in encoded]
    fit_rows = [rows[i] for i in fit_idx]
    val_rows = [rows[i] for i in val_idx]
    y_fit, y_val = train_split.labels[fit_idx], train_split.labels[val_idx]

    hp = HParams.from_json(config.hparams)
    built = build_model(config.arch, len(vocab), hp)
    pretrain_info = None
    if config.pretrain == "word2vec":
        pretrain_info = _pretrain_embeddings(built, config, data_path, fit_tokens, vocab, hp)
    compile_for_training(built.trainable, config.learning_rate)
    history = _History.create()
    callbacks = [
        history,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
    ]
    built.trainable.fit(
        BucketedBatches(fit_rows, y_fit, config.batch_size, seed=config.seed),
        validation_data=BucketedBatches(val_rows, y_val, 256, seed=config.seed, shuffle=False),
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    best_epoch = int(np.argmin([e.get("val_loss", np.inf) for e in history.epochs])) + 1
    extra: dict[str, Any] = {}
    if config.arch == "kim_ngram":
        extra = _fit_ngram_branch(built, fit_rows, y_fit, val_rows, y_val, len(vocab), hp)

    served = keras.Model(built.model.inputs, built.model.outputs, name=config.arch)
    predictor = Predictor(served, vocab, max_len, config.head_fraction)
    metrics: dict[str, Any] = {
        "validation": classification_metrics(y_val, predictor.probs(val_rows, progress="validate"))
    }
    test_rows: list[list[int]] = []
    if test_split is not None:
        test_rows = [
            e.ids for e in encode_texts(test_split.tokens, vocab, max_len, config.head_fraction)
        ]
        metrics["test"] = classification_metrics(
            test_split.labels, predictor.probs(test_rows, progress="test")
        )
        if extra:
            metrics["test_components"] = _component_accuracy(
                built, test_rows, test_split.labels, extra, len(vocab), hp
            )
    seconds = time.perf_counter() - started
    summary = {
        k: {"accuracy": v["accuracy"], "loss": v["loss"]}
        for k, v in metrics.items()
        if "accuracy" in v
    }
    log.info("training_finished", seconds=round(seconds, 1), best_epoch=best_epoch, **summary)

    manifest: dict[str, Any] = {
        "architecture": config.arch,
        "hparams": hp.to_json(),
        "preprocessing": PREPROCESSING,
        "vocab": {"size": len(vocab), "fingerprint": vocab.fingerprint},
        "sequence_length": max_len,
        "head_fraction": config.head_fraction,
        "labels": list(LABELS),
        "data": {"train": train_split.source, "test": test_split.source if test_split else None},
        "training": {
            "epochs_run": len(history.epochs),
            "best_epoch": best_epoch,
            "max_epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "patience": config.patience,
            "train_reviews": len(fit_idx),
            "validation_reviews": n_val,
            "seconds": round(seconds, 1),
            "ngram_branch": {k: v for k, v in extra.items() if k != "table"} or None,
            "pretrained_embeddings": pretrain_info,
        },
        "metrics": {
            k: {m: v[m] for m in ("accuracy", "loss", "n")} if "n" in v else v
            for k, v in metrics.items()
        },
    }
    hist = {"batches": history.batches, "epochs": history.epochs}

    def write(folder: Path) -> dict[str, Any]:
        served.save(folder / MODEL_FILE)
        vocab.save(folder / VOCAB_FILE)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (folder / "history.json").write_text(json.dumps(hist) + "\n")
        plot_training_curves(hist, folder / "training_curves.png")
        if "test" in metrics:
            plot_confusion(metrics["test"], folder / "confusion_matrix.png")
        return manifest

    version: Version | None = None
    if config.publish:
        store = store or ModelStore(settings.model_dir, settings.model_name)
        version = store.publish(write, min_accuracy=config.min_accuracy)
        log.info(
            "model_published", model=store.name, version=version.version, path=str(version.path)
        )
    return {"metrics": metrics, "version": version, "manifest": manifest}


def _pretrain_embeddings(
    built: Any,
    config: TrainConfig,
    data_path: Path,
    fit_tokens: list[list[str]],
    vocab: Vocabulary,
    hp: Any,
) -> dict[str, Any]:
    """Initialise the embedding layer with word2vec on the training part + unlabelled reviews."""
    from tqdm import tqdm

    from worker.cnn import EMBEDDING_LAYER
    from worker.embeddings import word2vec_matrix

    started = time.perf_counter()
    unsup_path = config.unsup_data
    if unsup_path is None and detect_format(data_path).startswith("aclimdb"):
        unsup_path = data_path
    extra_tokens: list[list[str]] = []
    if unsup_path is not None:
        reviews = read_reviews(unsup_path, split="unsup", errors="keep")
        extra_tokens = [
            tokenize(r.text) for r in tqdm(reviews, desc="tokenize unsup", unit=" reviews")
        ]
    matrix, covered = word2vec_matrix(fit_tokens + extra_tokens, vocab, hp.embed_dim, config.seed)
    built.trainable.get_layer(EMBEDDING_LAYER).set_weights([matrix])
    return {
        "method": "word2vec (gensim CBOW)",
        "texts": len(fit_tokens) + len(extra_tokens),
        "unlabelled": len(extra_tokens),
        "vocabulary_covered": round(covered, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _fit_ngram_branch(
    built: Any,
    fit_rows: list[list[int]],
    y_fit: np.ndarray,
    val_rows: list[list[int]],
    y_val: np.ndarray,
    vocab_size: int,
    hp: Any,
) -> dict[str, Any]:
    """Fit the NB-LR table on the training part, then the blend weights on validation."""
    from sklearn.linear_model import LogisticRegression

    from worker.ngrams import bag_scores, fit_nb_logreg
    from worker.predictor import batched_probs, make_forward

    started = time.perf_counter()
    table, intercept = fit_nb_logreg(fit_rows, y_fit, vocab_size, hp.buckets)
    built.model.get_layer("ngram_bag").set_weights([table])
    cnn = _log_odds(batched_probs(make_forward(built.trainable), val_rows))
    bag = bag_scores(val_rows, table, vocab_size, hp.buckets)
    blend = LogisticRegression(C=1e4).fit(np.stack([cnn, bag], axis=1), y_val)
    coef = [float(blend.coef_[0, 0]), float(blend.coef_[0, 1]), float(blend.intercept_[0])]
    built.model.get_layer("blend").set_weights([np.array(coef, dtype=np.float32)])
    log.info("ngram_branch_fitted", seconds=round(time.perf_counter() - started, 1), blend=coef)
    return {"table": table, "intercept": intercept, "blend": coef}


def _log_odds(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-7, 1.0)
    return np.log(p[:, 1]) - np.log(p[:, 0])


def _component_accuracy(
    built: Any,
    rows: list[list[int]],
    labels: np.ndarray,
    extra: dict[str, Any],
    vocab_size: int,
    hp: Any,
) -> dict[str, float]:
    """Test accuracy of each branch alone: how much each contributes to the served blend."""
    from worker.ngrams import bag_scores
    from worker.predictor import batched_probs, make_forward

    cnn = batched_probs(make_forward(built.trainable), rows)
    bag = bag_scores(rows, extra["table"], vocab_size, hp.buckets) + extra["intercept"]
    return {
        "cnn_only": float((cnn.argmax(axis=1) == labels).mean()),
        "ngram_only": float(((bag > 0).astype(int) == labels).mean()),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from worker.cnn import ARCHITECTURES

    p = argparse.ArgumentParser(
        prog="sentiment-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        help=f"aclImdb dir/.tar.gz, CSV or JSONL (default: $DATA_DIR/{ACLIMDB_ARCHIVE})",
    )
    p.add_argument(
        "--test-data", type=Path, help="labelled test file (default: the aclImdb test split)"
    )
    p.add_argument("--no-test", action="store_true", help="skip evaluation on a test split")
    p.add_argument("--download", action="store_true", help="download IMDB from Stanford if missing")
    p.add_argument("--arch", choices=ARCHITECTURES, default=DEFAULT_ARCH)
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument(
        "--seq-len", type=int, help="token cap (default: 95th percentile of training lengths)"
    )
    p.add_argument(
        "--head-fraction",
        type=float,
        default=DEFAULT_HEAD_FRACTION,
        help="share of the cap kept from the start of a long review (rest from its end)",
    )
    p.add_argument("--embed-dim", type=int, default=48)
    p.add_argument("--filters", type=int, default=64, help="filters per kernel size")
    p.add_argument("--kernel-sizes", default="1,2,3,5")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    p.add_argument(
        "--patience", type=int, default=DEFAULT_PATIENCE, help="early-stopping patience (epochs)"
    )
    p.add_argument("--limit", type=int, help="use at most N reviews per split (quick runs)")
    p.add_argument(
        "--pretrain",
        choices=("none", "word2vec"),
        default="none",
        help="initialise embeddings with word2vec on train + unlabelled reviews",
    )
    p.add_argument(
        "--unsup-data",
        type=Path,
        help="unlabelled reviews for --pretrain (default: aclImdb's train/unsup)",
    )
    p.add_argument("--min-accuracy", type=float, help="refuse to publish below this test accuracy")
    p.add_argument("--model-dir", type=Path, help="model store root (default: $MODEL_DIR)")
    p.add_argument("--model-name", help="model name in the store (default: $MODEL_NAME)")
    p.add_argument("--no-publish", action="store_true", help="train and evaluate only")
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    if not 0 <= args.head_fraction <= 1:
        p.error("--head-fraction must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    settings = settings_or_exit("sentiment-train")
    configure_logging(settings.log_level, settings.log_format)
    if args.model_dir or args.model_name:
        settings = Settings(
            **{
                **settings.__dict__,
                "model_dir": args.model_dir or settings.model_dir,
                "model_name": args.model_name or settings.model_name,
            }
        )
    config = TrainConfig(
        data=args.data,
        test_data=args.test_data,
        no_test=args.no_test,
        download=args.download,
        arch=args.arch,
        vocab_size=args.vocab_size,
        seq_len=args.seq_len,
        head_fraction=args.head_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        val_fraction=args.val_fraction,
        patience=args.patience,
        limit=args.limit,
        min_accuracy=args.min_accuracy,
        pretrain=args.pretrain,
        unsup_data=args.unsup_data,
        hparams={
            "embed_dim": args.embed_dim,
            "filters": args.filters,
            "kernel_sizes": tuple(int(k) for k in args.kernel_sizes.split(",")),
        },
        publish=not args.no_publish,
    )
    try:
        result = train(config, settings)
    except PublishRefused as exc:
        log.error("publish_refused", reason=str(exc))
        print(f"sentiment-train: not published: {exc}", file=sys.stderr)
        return 3
    except (DataError, StoreError, ValueError) as exc:
        log.error("training_failed", reason=str(exc))
        print(f"sentiment-train: {exc}", file=sys.stderr)
        return 2
    version = result["version"]
    test = result["metrics"].get("test")
    where = f"published {version.path}" if version else "not published (--no-publish)"
    score = f"test accuracy {test['accuracy']:.4f}" if test else "no test split"
    print(f"{where}; {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
