"""``sentiment-train``: train a model version and publish it into the store.

Examples::

    sentiment-train                                    # served recipe on ../shared/data
    sentiment-train --data my_train.csv --test-data my_test.csv --arch kim --epochs 3   # your CSVs
    sentiment-train --limit 2000 --epochs 1 --model-name scratch   # a quick smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

import structlog

from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError
from shared.log import configure_logging
from shared.store import PublishRefused, StoreError
from worker.training.options import (
    add_store_arguments,
    add_training_arguments,
    check_training_arguments,
    config_from,
)
from worker.training.train import train

log = structlog.get_logger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = command_parser("sentiment-train", __doc__, epilog=True)
    add_training_arguments(p)
    add_store_arguments(p)
    p.add_argument("--no-publish", action="store_true", help="train and evaluate only")
    args = p.parse_args(argv)
    check_training_arguments(p, args)
    return args


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
