"""The training options shared by ``sentiment-train`` and ``sentiment-trainer``."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.aclimdb import ACLIMDB_ARCHIVE
from shared.vocab import DEFAULT_HEAD_FRACTION
from worker.training.config import (
    DEFAULT_ARCH,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_PATIENCE,
    DEFAULT_VAL_FRACTION,
    DEFAULT_VOCAB_SIZE,
    TrainConfig,
)


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options: data, architecture, hyper-parameters, seed."""
    from worker.model.cnn import ARCHITECTURES

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
    p.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default=DEFAULT_ARCH,
        help=f"network architecture (default: {DEFAULT_ARCH}, the served recipe)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        help="words kept, most frequent first (default: %(default)s)",
    )
    p.add_argument(
        "--seq-len", type=int, help="token cap (default: 95th percentile of training lengths)"
    )
    p.add_argument(
        "--head-fraction",
        type=float,
        default=DEFAULT_HEAD_FRACTION,
        help="share of the cap kept from the start of a long review (rest from its end)",
    )
    p.add_argument("--embed-dim", type=int, default=48, help="word vector size (default: 48)")
    p.add_argument("--filters", type=int, default=64, help="filters per kernel size")
    p.add_argument(
        "--kernel-sizes",
        default="1,2,3,5",
        help="convolution widths, comma-separated (default: 1,2,3,5)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help="passes over the data (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="reviews per gradient step (default: %(default)s)",
    )
    p.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam step size (default: 1e-3)"
    )
    p.add_argument(
        "--seed", type=int, default=1, help="seed for splits, weights and shuffling (default: 1)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        help="share of train held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--patience", type=int, default=DEFAULT_PATIENCE, help="early-stopping patience (epochs)"
    )
    p.add_argument(
        "--limit",
        type=int,
        help="use at most N reviews per split, and N of the unlabelled reviews for word2vec and "
        "pseudo-labels (seeded samples; quick runs)",
    )
    p.add_argument(
        "--pretrain",
        choices=("none", "word2vec"),
        default=TrainConfig.pretrain,
        help="initialise embeddings with word2vec on the training part + unlabelled reviews "
        "(default: word2vec, the served recipe)",
    )
    p.add_argument(
        "--unsup-data",
        type=Path,
        help="unlabelled reviews for --pretrain (default: aclImdb's train/unsup)",
    )
    p.add_argument(
        "--pseudo-label",
        action=argparse.BooleanOptionalAction,
        default=TrainConfig.pseudo_label,
        help="kim_ngram_crops: train the short-text bag on sentences of unlabelled reviews too, "
        "labelled by the review bag where it is confident (default: on, the served recipe)",
    )
    p.add_argument(
        "--sentence-labels",
        action=argparse.BooleanOptionalAction,
        default=TrainConfig.sentence_labels,
        help="kim_ngram_crops: label sentence crops by what each says (VADER agreeing with the "
        "review: its label; a statement: both; against it: left out), not by their review "
        "(default: on, the served recipe)",
    )
    p.add_argument(
        "--soft-labels",
        type=Path,
        help="distil from a GPU teacher's soft labels (worker/training/teacher_gpu.py): "
        "unlabelled reviews it is confident about join the network's and the bags' training",
    )
    p.add_argument("--min-accuracy", type=float, help="refuse to publish below this test accuracy")


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """Where versions are published (defaults: ``MODEL_DIR``, ``MODEL_NAME``)."""
    p.add_argument("--model-dir", type=Path, help="model store root (default: $MODEL_DIR)")
    p.add_argument("--model-name", help="model name in the store (default: $MODEL_NAME)")


def check_training_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    if not 0 <= args.head_fraction <= 1:
        p.error("--head-fraction must be between 0 and 1")


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the command-line options describe."""
    return TrainConfig(
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
        pseudo_label=args.pseudo_label,
        sentence_labels=args.sentence_labels,
        soft_labels=args.soft_labels,
        hparams={
            "embed_dim": args.embed_dim,
            "filters": args.filters,
            "kernel_sizes": tuple(int(k) for k in args.kernel_sizes.split(",")),
        },
        publish=not getattr(args, "no_publish", False),
    )
