"""Classify a file of reviews in-process: ``sentiment-predict FILE [-o OUT]``.

Reads any supported format (plain text one review a line, CSV, JSONL, aclImdb), predicts with the
published model (``LATEST`` unless ``--version``), prints a summary and writes one output line per
input line, in input order — a line that cannot be read or classified gets its error instead.
Output is JSONL or CSV, chosen by the extension of ``-o``.
"""

from __future__ import annotations

import argparse
import csv
import json
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
from shared.schema import review_error as text_error
from shared.store import ModelStore, StoreError

log = structlog.get_logger(__name__)

BATCH = 256


def review_error(review: Review) -> str | None:
    """Why a review cannot be classified (a read error, or the queue contract's rules), or None."""
    return review.error or text_error(review.text)


def classify(
    reviews: Iterable[Review], predictor: Any, progress: bool = True
) -> list[dict[str, Any]]:
    """One result dict per review, in order; invalid reviews carry ``error``."""
    from tqdm import tqdm

    items = list(reviews)
    rows: list[dict[str, Any]] = []
    valid = [(i, r) for i, r in enumerate(items) if review_error(r) is None]
    predictions: dict[int, Any] = {}
    with tqdm(total=len(valid), desc="classify", unit=" reviews", disable=not progress) as bar:
        for start in range(0, len(valid), BATCH * 8):
            chunk = valid[start : start + BATCH * 8]
            for (i, _), pred in zip(
                chunk, predictor.predict_texts([r.text for _, r in chunk]), strict=True
            ):
                predictions[i] = pred
            bar.update(len(chunk))
    for i, review in enumerate(items):
        row: dict[str, Any] = {"id": review.id, "line": review.line}
        if i in predictions:
            p = predictions[i]
            row.update(
                label=p.label,
                scores=p.scores,
                oov_count=p.oov_count,
                truncated=p.truncated,
                model_version=predictor.name,
                error=None,
            )
        else:
            row.update(
                label=None, scores=None, model_version=predictor.name, error=review_error(review)
            )
        rows.append(row)
    return rows


def write_results(rows: Sequence[dict[str, Any]], path: Path) -> None:
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "label", "negative", "positive", "model_version", "error"])
            for r in rows:
                scores = r.get("scores") or {}
                writer.writerow(
                    [
                        r["id"],
                        r["label"] or "",
                        scores.get("negative", ""),
                        scores.get("positive", ""),
                        r["model_version"],
                        r["error"] or "",
                    ]
                )
    else:
        with path.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def summary(rows: Sequence[dict[str, Any]]) -> str:
    counts = Counter(r["label"] or "error" for r in rows)
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
        from worker.predictor import configure_tensorflow, load_predictor

        configure_tensorflow(settings.tf_threads)
        version = ModelStore(settings.model_dir, settings.model_name).resolve(args.version)
        predictor = load_predictor(version)
        rows = classify(read_reviews(args.file, split=args.split, errors="keep"), predictor)
    except (DataError, StoreError) as exc:
        print(f"sentiment-predict: {exc}", file=sys.stderr)
        return 2
    if args.output:
        write_results(rows, args.output)
    for r in rows[:10]:
        label = r["label"] or f"error: {r['error']}"
        score = f" {max(r['scores'].values()):.2f}" if r["scores"] else ""
        print(f"{r['id']:>24}  {label}{score}")
    print(summary(rows) + (f"; wrote {args.output}" if args.output else ""))
    log.info(
        "file_classified", file=str(args.file), reviews=len(rows), model_version=predictor.name
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
