"""Classify a file of reviews in-process: ``sentiment-predict FILE [-o OUT]``.

Reads any supported format (plain text one review a line, CSV, JSONL, aclImdb), predicts and
explains with the published model (``LATEST`` unless ``--version``) exactly as a queue worker
does, prints a summary and writes one output line per input line, in input order, in the
producer's format — a line that cannot be read or classified gets its error instead.  Output is
JSONL or CSV, chosen by the extension of ``-o``.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError, read_reviews
from shared.log import configure_logging
from shared.output import first, write_output
from shared.store import ModelStore, StoreError

log = structlog.get_logger(__name__)


#: Results printed to the terminal.
SHOWN = 10


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = command_parser("sentiment-predict", __doc__, epilog=True)
    parser.add_argument(
        "file", type=Path, help="reviews: .txt (one a line), .csv, .jsonl or aclImdb"
    )
    parser.add_argument("-o", "--output", type=Path, help="results file (.jsonl or .csv)")
    parser.add_argument("--version", default="LATEST", help="model version (default: LATEST)")
    parser.add_argument("--split", default="test", help="aclImdb split to read (default: test)")
    parser.add_argument(
        "--sentences", action="store_true", help="answer every sentence too (offsets, label)"
    )
    args = parser.parse_args(argv)
    settings = settings_or_exit("sentiment-predict")
    configure_logging(settings.log_level, settings.log_format)
    shown: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    try:
        from worker.model.predictor import configure_tensorflow
        from worker.model.served import classify_reviews, load_served

        configure_tensorflow(settings.tf_threads)
        served = load_served(ModelStore(settings.model_dir, settings.model_name), args.version)
        reviews = read_reviews(args.file, split=args.split, errors="keep")
        rows = first(classify_reviews(reviews, served, sentences=args.sentences), SHOWN, shown)
        if args.output:
            counts.update(write_output(rows, args.output, args.sentences))
        else:
            counts.update("error" if r.get("error") else str(r["label"]) for r in rows)
    except (DataError, StoreError) as exc:
        print(f"sentiment-predict: {exc}", file=sys.stderr)
        return 2
    for r in shown:
        if r.get("error"):
            print(f"{r['id']:>24}  error: {r['error']}")
            continue
        words = ", ".join(r.get("reasons") or []) or "no clear reason"
        label = f"not sure, leans {r['label']}" if r.get("uncertain") else r["label"]
        if r.get("verdict") in ("mixed", "neutral"):
            label = f"{r['verdict']} (label {r['label']})"
        print(f"{r['id']:>24}  {label} {max(r['scores'].values()):.2f}  (why: {words})")
        for s in r.get("sentences") or []:
            print(
                f"{'':>24}    [{s['start']}:{s['end']}] {s['label']} "
                f"{max(s['scores'].values()):.2f}  {', '.join(s['reasons'])}"
            )
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if v)
    total = sum(counts.values())
    print(f"{total} reviews ({parts})" + (f"; wrote {args.output}" if args.output else ""))
    log.info(
        "file_classified", file=str(args.file), reviews=total, model_version=served.model_version
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
