"""``sentiment-calibrate``: calibrated confidence and an "uncertain" threshold for a version.

    sentiment-calibrate                          # LATEST, on its own validation split
    sentiment-calibrate --model v0002 --uncertain-below 0.6

Fits ``z / temperature + bias`` on the version's validation reviews and one sentence of each
(never the test split), prints expected calibration error, accuracy and the share predicted
positive before and after, and publishes a new version with the calibration in its manifest and
a reliability diagram beside it; the source version stays in the store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared.aclimdb import ensure_aclimdb
from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError, detect_format, read_reviews
from shared.log import configure_logging
from shared.store import ModelStore, StoreError
from worker.training.calibrate import (
    DEFAULT_UNCERTAIN_BELOW,
    answer_probs,
    as_served_calibration,
    calibrate,
    publish_calibrated,
    test_metrics,
    validation_reviews,
)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = settings_or_exit("sentiment-calibrate")
    p = command_parser("sentiment-calibrate", __doc__, epilog=True)
    p.add_argument("--model", default="LATEST", help="version to calibrate (default LATEST)")
    p.add_argument("--data", type=Path, help="the training data it was trained on (default IMDB)")
    p.add_argument(
        "--uncertain-below",
        type=float,
        default=DEFAULT_UNCERTAIN_BELOW,
        help="flag answers whose calibrated confidence is under this (0.5-1)",
    )
    p.add_argument("--no-publish", action="store_true", help="report only")
    args = p.parse_args(argv)
    if not 0.5 <= args.uncertain_below < 1:
        p.error("--uncertain-below must be in [0.5, 1)")
    configure_logging(settings.log_level, settings.log_format)
    from worker.model.served import load_served

    store = ModelStore(settings.model_dir, settings.model_name)
    try:
        source = store.resolve(args.model, verify=True)
        data = ensure_aclimdb(args.data, settings.data_dir, False)
        texts, val_labels = validation_reviews(source, data)
        seed = int(source.manifest["training"]["seed"])
        served = load_served(store, source.version)
        by_sentence = bool(source.manifest["training"].get("sentence_labels"))
        cal, sets = calibrate(served, (texts, val_labels), seed, args.uncertain_below, by_sentence)
    except (DataError, StoreError, KeyError, ValueError) as exc:
        print(f"sentiment-calibrate: {exc}", file=sys.stderr)
        return 2
    print(
        f"{source.version}: reviews T {cal.long[0]:.3f} bias {cal.long[1]:+.3f}; "
        f"sentences T {cal.short[0]:.3f} bias {cal.short[1]:+.3f}; "
        f"uncertain below {cal.uncertain_below:.2f} (validation: {len(texts)} reviews)"
    )
    print(f"{'':<8} {'ECE':>14} {'accuracy':>16} {'positive share':>18} {'uncertain':>10}")
    for name in ("full", "short"):
        b, a = cal.before[name], cal.after[name]
        if not b["n"]:
            print(f"{name:<8} no validation texts of that length: not calibrated")
            continue
        print(
            f"{name:<8} {b['ece']:>6.4f} -> {a['ece']:.4f} {b['accuracy']:>7.4f} -> "
            f"{a['accuracy']:.4f} {b['positive_share']:>9.4f} -> {a['positive_share']:.4f} "
            f"{a['uncertain_share']:>10.1%}"
        )
    if args.no_publish:
        return 0
    test = None
    if detect_format(data).startswith("aclimdb"):  # reported in the manifest, never fitted on
        reviews = [r for r in read_reviews(data, split="test", labelled=True) if r.text.strip()]
        labels = np.array([r.label for r in reviews])
        p_test = answer_probs(served, [r.text for r in reviews], as_served_calibration(cal))
        test = test_metrics(p_test, labels)
        print(f"test split (reporting): accuracy {test['accuracy']:.4f}, ECE {test['ece']:.4f}")
    published = publish_calibrated(store, source, cal, sets, test)
    print(f"published {published.model_version} (calibrated from {source.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
