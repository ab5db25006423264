"""``sentiment-feedback``: bulk corrections in, votes out, and how users rate the model.

    sentiment-feedback import corrections.jsonl     # {"text": ..., "label": "positive"} lines,
                                                    # or CSV with review,sentiment columns (the
                                                    # formats sentiment-train reads)
    sentiment-feedback export -o feedback.jsonl     # every vote that counts, as JSONL
    sentiment-feedback stats                        # votes per model version, agreement rate

Imported lines count as votes of one user (the file's name, or a line's ``user`` field) and are
keyed by their text: importing the same file twice changes nothing.  Every line that cannot be
stored is reported with its line number and reason; the others are stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from redis import Redis

from shared import feedback
from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError, read_reviews
from shared.log import configure_logging
from shared.queues import RedisUnavailable, connect
from shared.schema import LABELS


def cmd_import(conn: Redis, path: Path, user: str | None) -> int:
    who = feedback.hash_user(f"import:{user or path.name}")
    stored = refused = 0
    for review in read_reviews(path, labelled=True, errors="keep"):
        where = f"{path.name}:{review.line or review.id}"
        if review.error is not None or review.label is None:
            print(f"{where}: {review.error or 'no label'}", file=sys.stderr)
            refused += 1
            continue
        key = hashlib.sha256(review.text.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        item = feedback.Feedback(
            text=review.text,
            label=LABELS[review.label],
            predicted="",
            model_version="",
            user=who,
            message=f"import:{key}",
            source="import",
            at=time.time(),
        )
        try:
            feedback.record(conn, item)
            stored += 1
        except feedback.FeedbackError as exc:
            print(f"{where}: {exc}", file=sys.stderr)
            refused += 1
    print(f"{stored} corrections stored, {refused} refused")
    return 0 if stored or not refused else 2


def cmd_export(conn: Redis, out: Path | None) -> int:
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    n = 0
    try:
        for entry, item in feedback.entries(conn):
            sink.write(json.dumps({"id": entry, **item.to_json()}, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if out:
            sink.close()
    if out:
        print(f"{n} votes written to {out}")
    return 0


def cmd_stats(conn: Redis, as_json: bool) -> int:
    report = feedback.stats([f for _, f in feedback.entries(conn)])
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    agreement = report["agreement"]
    print(
        f"{report['votes']} votes from {report['users']} users; agreement {agreement:.1%}"
        if agreement is not None
        else "no votes yet"
    )
    print("by source: " + ", ".join(f"{k} {v}" for k, v in report["by_source"].items()))
    for version, row in sorted(report["by_version"].items()):
        print(f"  {version:<28} {row['votes']:>6} votes  agreement {row['agreement']:.1%}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("sentiment-feedback", __doc__, epilog=True)
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="labelled corrections: JSONL, or CSV (review,sentiment)")
    imp.add_argument("file", type=Path, help="the .jsonl or .csv file to import")
    imp.add_argument("--user", help="whose votes these are (default: the file's name)")
    exp = sub.add_parser("export", help="every vote that counts, as JSONL")
    exp.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    st = sub.add_parser("stats", help="votes per model version and agreement")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    settings = settings_or_exit("sentiment-feedback")
    configure_logging(settings.log_level, settings.log_format)
    try:
        conn = connect(settings.redis_url)
        if args.command == "import":
            return cmd_import(conn, args.file, args.user)
        if args.command == "export":
            return cmd_export(conn, args.output)
        return cmd_stats(conn, args.json)
    except (DataError, RedisUnavailable) as exc:
        print(f"sentiment-feedback: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
