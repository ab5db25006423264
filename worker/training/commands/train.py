"""``sentiment-train``: train a model version and publish it into the store.

Examples::

    sentiment-train                                    # served recipe on ../shared/data
    sentiment-train --data reviews.csv --test-data held_out.csv --arch kim --epochs 3
    sentiment-train --limit 2000 --epochs 1 --model-name scratch   # a quick smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from shared.config import settings_or_exit
from shared.datasets import ACLIMDB_ARCHIVE, DataError
from shared.log import configure_logging
from shared.store import PublishRefused, StoreError
from shared.vocab import DEFAULT_HEAD_FRACTION
from worker.training.train import (
    DEFAULT_ARCH,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_PATIENCE,
    DEFAULT_VAL_FRACTION,
    DEFAULT_VOCAB_SIZE,
    TrainConfig,
    train,
)

log = structlog.get_logger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from worker.model.cnn import ARCHITECTURES

    p = argparse.ArgumentParser(
        prog="sentiment-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
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
        hparams={
            "embed_dim": args.embed_dim,
            "filters": args.filters,
            "kernel_sizes": tuple(int(k) for k in args.kernel_sizes.split(",")),
        },
        publish=not args.no_publish,
    )


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    settings = settings_or_exit("sentiment-train")
    configure_logging(settings.log_level, settings.log_format)
    settings = dataclasses.replace(
        settings,
        model_dir=args.model_dir or settings.model_dir,
        model_name=args.model_name or settings.model_name,
    )
    try:
        result = train(config_from(args), settings)
    except PublishRefused as exc:
        log.error("publish_refused", reason=str(exc))
        print(f"sentiment-train: not published: {exc}", file=sys.stderr)
        return 3
    except (DataError, StoreError, ValueError) as exc:
        log.error("training_failed", reason=str(exc))
        print(f"sentiment-train: {exc}", file=sys.stderr)
        return 2
    test = result.metrics.get("test")
    where = (
        f"published {result.published.path}" if result.published else "not published (--no-publish)"
    )
    score = f"test accuracy {test['accuracy']:.4f}" if test else "no test split"
    print(f"{where}; {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
