"""Classify a file of reviews in-process: ``sentiment-predict FILE [-o OUT]``.

Reads any supported format (plain text one review a line, CSV, JSONL, aclImdb), predicts and
explains with the published model (``LATEST`` unless ``--version``) exactly as a queue worker
does, prints a summary and writes one output line per input line, in input order, in the
producer's format — a line that cannot be read or classified gets its error instead.  Output is
JSONL or CSV, chosen by the extension of ``-o``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog

from shared.config import settings_or_exit
from shared.datasets import DataError, Review, read_reviews
from shared.log import configure_logging
from shared.producer import write_output
from shared.store import ModelStore, StoreError

log = structlog.get_logger(__name__)

BATCH = 1024
TOP_WORDS = 10


def classify(reviews: Iterable[Review], served: Any, progress: bool = True) -> list[dict[str, Any]]:
    """One output row per review, in order, shaped like the queue's (see ``shared.producer``).

    Rows carry the job's fields (label, scores, top words and phrases, OOV count, truncation)
    or ``error``: a read error from the file, or the queue contract's rules for the text.
    """
    from tqdm import tqdm

    from worker.jobs import explain_reviews

    items = list(reviews)
    rows: list[dict[str, Any]] = [
        {"id": r.id, "line": r.line, "model_version": served.version} for r in items
    ]
    readable = [i for i, r in enumerate(items) if r.error is None]
    for i, r in enumerate(items):
        if r.error is not None:
            rows[i]["error"] = r.error
    with tqdm(total=len(readable), desc="classify", unit=" reviews", disable=not progress) as bar:
        for start in range(0, len(readable), BATCH):
            chunk = readable[start : start + BATCH]
            payload = [{"id": items[i].id, "text": items[i].text} for i in chunk]
            for i, result in zip(chunk, explain_reviews(served, payload, TOP_WORDS), strict=True):
                rows[i].update({k: v for k, v in result.items() if k != "id"})
            bar.update(len(chunk))
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> str:
    counts = Counter(r.get("label") or "error" for r in rows)
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return f"{len(rows)} reviews ({parts})"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="sentiment-predict", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "file", type=Path, help="reviews: .txt (one a line), .csv, .jsonl or aclImdb"
    )
    parser.add_argument("-o", "--output", type=Path, help="results file (.jsonl or .csv)")
    parser.add_argument("--version", default="LATEST", help="model version (default: LATEST)")
    parser.add_argument("--split", default="test", help="aclImdb split to read (default: test)")
    args = parser.parse_args(argv)
    settings = settings_or_exit("sentiment-predict")
    configure_logging(settings.log_level, settings.log_format)
    try:
        from worker.jobs import load_served
        from worker.predictor import configure_tensorflow

        configure_tensorflow(settings.tf_threads)
        served = load_served(ModelStore(settings.model_dir, settings.model_name), args.version)
        rows = classify(read_reviews(args.file, split=args.split, errors="keep"), served)
    except (DataError, StoreError) as exc:
        print(f"sentiment-predict: {exc}", file=sys.stderr)
        return 2
    if args.output:
        write_output(rows, args.output)
    for r in rows[:10]:
        if r.get("error"):
            print(f"{r['id']:>24}  error: {r['error']}")
            continue
        words = ", ".join(f"{w} {v:+.2f}" for w, v in r["top_words"][:4])
        print(f"{r['id']:>24}  {r['label']} {max(r['scores'].values()):.2f}  ({words})")
    print(summary(rows) + (f"; wrote {args.output}" if args.output else ""))
    log.info(
        "file_classified", file=str(args.file), reviews=len(rows), model_version=served.version
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
