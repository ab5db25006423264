"""``sentiment-analyze``: the error analysis of a model version as one self-contained HTML report.

    sentiment-analyze                                   # LATEST on the 25k IMDB test split
    sentiment-analyze --model v0005 --data samples/reviews.csv --out /tmp/report
    sentiment-analyze --model v0005 --compare v0002     # the same samples under two versions
    sentiment-analyze --limit 2000 --verdicts bench/data/verdicts.jsonl   # and the verdicts

Writes ``report.html`` (images embedded, no network), the PNGs, and ``analysis.json`` with every
number the report shows, into ``<version>/analysis/`` or ``--out``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError, read_reviews
from shared.log import configure_logging
from shared.schema import VERDICTS
from shared.store import ModelStore, StoreError
from worker.training.analysis.report import analyze


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_or_exit("sentiment-analyze")
    p = command_parser("sentiment-analyze", __doc__, epilog=True)
    p.add_argument("--model", default="LATEST", help="version to analyse (default LATEST)")
    p.add_argument(
        "--data",
        type=Path,
        default=settings.data_dir / "aclImdb_v1.tar.gz",
        help="labelled reviews: aclImdb dir/.tar.gz, CSV or JSONL (default: $DATA_DIR's IMDB)",
    )
    p.add_argument("--split", default="test", help="aclImdb split (default test)")
    p.add_argument("--compare", help="another version, run on the same samples")
    p.add_argument(
        "--verdicts",
        type=Path,
        help="JSONL of texts with a known verdict (text, verdict): accuracy per verdict",
    )
    p.add_argument("--out", type=Path, help="output folder (default <version>/analysis)")
    p.add_argument("--samples", type=int, default=10, help="highest-loss and random samples shown")
    p.add_argument("--limit", type=int, help="analyse a seeded random subset of N reviews")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=settings.model_dir,
        help="model store root (default: $MODEL_DIR)",
    )
    p.add_argument(
        "--model-name",
        default=settings.model_name,
        help="model name in the store (default: $MODEL_NAME)",
    )
    args = p.parse_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        reviews = list(read_reviews(args.data, split=args.split, errors="keep"))
        if args.limit and args.limit < len(reviews):  # a seeded random subset, in file order
            keep = np.sort(np.random.default_rng(0).choice(len(reviews), args.limit, replace=False))
            reviews = [reviews[i] for i in keep]
        items = _verdict_items(args.verdicts) if args.verdicts else []
        out, analysis = analyze(
            ModelStore(args.model_dir, args.model_name),
            args.model,
            reviews,
            args.out,
            args.compare,
            args.samples,
            data_name=f"{args.data.name} ({args.split})"
            if args.data.suffix == ".gz" or args.data.is_dir()
            else args.data.name,
            verdict_items=items,
        )
    except (DataError, StoreError) as exc:
        print(f"sentiment-analyze: {exc}", file=sys.stderr)
        return 2
    print(
        f"{analysis['n']:,} samples, "
        f"accuracy {analysis['training']['evaluation']['accuracy']:.2%}, "
        f"{analysis['seconds']:.0f} s -> {out / 'report.html'}"
    )
    verdicts = analysis.get("verdicts")
    if verdicts:
        print(f"\nverdicts on {verdicts['n']} texts: macro-F1 {verdicts['macro_f1']:.4f}")
        names = [k for k in verdicts["rows"][0] if k.startswith("as ")]
        print(
            f"{'true':<10} {'n':>5} {'accuracy':>9} {'F1':>6} "
            + " ".join(f"{n:>11}" for n in names)
        )
        for row in verdicts["rows"]:
            print(
                f"{row['verdict']:<10} {row['support']:>5} {row['accuracy'] or 0:>9.3f} "
                f"{row['f1']:>6.3f} " + " ".join(f"{row[n]:>11}" for n in names)
            )
    comparison = analysis.get("comparison") or {}
    if comparison.get("by_length"):
        first, second = comparison["versions"]
        a, b = first.rsplit("/", 1)[-1], second.rsplit("/", 1)[-1]
        print(f"\nanswers per length ({first} vs {second}; accuracy, share answered positive)")
        print(
            f"{'texts':<18} {'n':>6} {a:>8} {b:>8} {'gain pt':>8} {'pos ' + a:>10} {'pos ' + b:>10}"
        )
        for row in comparison["by_length"]:
            print(
                f"{row['texts']:<18} {row['n']:>6} {row[f'accuracy {first}']:>8.4f} "
                f"{row[f'accuracy {second}']:>8.4f} {row['gain (points)']:>+8.2f} "
                f"{row[f'answered positive {first}']:>10.3f} "
                f"{row[f'answered positive {second}']:>10.3f}"
            )
    return 0


def _verdict_items(path: Path) -> list[dict[str, Any]]:
    """Texts with their known verdict from a JSONL file (DataError when unreadable)."""
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not JSON: {exc.msg}", n) from exc
        if (
            not isinstance(item, dict)
            or item.get("verdict") not in VERDICTS
            or not item.get("text")
        ):
            raise DataError(
                path, f"each line needs a 'text' and a 'verdict' (one of {', '.join(VERDICTS)})", n
            )
        items.append(item)
    if not items:
        raise DataError(path, "no texts")
    return items


if __name__ == "__main__":
    sys.exit(main())
