"""Writing a batch's output: one line per input record, as JSONL or CSV, atomically.

``OutputFile`` writes beside the target and renames into place only when every line is there,
so a crash or Ctrl-C never leaves a half-written output file.  Used by ``sentiment-enqueue``,
``sentiment-run``, ``sentiment-predict`` and the HTTP API's results endpoint (``RowFormat``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from shared.datasets import DataError

#: The CSV output's columns (JSONL lines carry the same fields).
OUTPUT_FIELDS = [
    "id",
    "line",
    "label",
    "verdict",
    "negative",
    "positive",
    "uncertain",
    "language",
    "top_words",
    "top_phrases",
    "reasons",
    "model_version",
    "error",
]
#: Opt-in CSV column (``--sentences``): each sentence as ``start-end:label:positive score``.
SENTENCES_FIELD = "sentences"


class RowFormat:
    """Output rows as lines of JSONL or CSV (one record per input row, CSV-quoted as needed):
    the producer's file and the API's download are the same bytes."""

    def __init__(self, fmt: str, sentences: bool = False) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown output format {fmt!r}")
        self.csv = fmt == "csv"
        self._buffer = io.StringIO()
        fields = [*OUTPUT_FIELDS, SENTENCES_FIELD] if sentences else OUTPUT_FIELDS
        self._writer = csv.DictWriter(self._buffer, fields, extrasaction="ignore")

    def header(self) -> str:
        """What comes before the first row (the CSV header; nothing for JSONL)."""
        if not self.csv:
            return ""
        self._writer.writeheader()
        return self._take()

    def line(self, row: dict[str, Any]) -> str:
        """One row, with its line ending."""
        if not self.csv:
            clean = {k: v for k, v in row.items() if k != "source" and not k.startswith("_")}
            clean.setdefault("error", None)
            try:  # compact JSON, written in C: rows answered per sentence are long
                return orjson.dumps(clean).decode() + "\n"
            except (TypeError, orjson.JSONEncodeError):  # a lone surrogate, say: as before
                return json.dumps(clean, ensure_ascii=False) + "\n"
        scores = row.get("scores") or {}
        self._writer.writerow(
            {
                **row,
                "negative": scores.get("negative"),
                "positive": scores.get("positive"),
                "top_words": " ".join(w for w, _ in row.get("top_words") or []),
                "top_phrases": " | ".join(p for p, _ in row.get("top_phrases") or []),
                "reasons": " ".join(row.get("reasons") or []),
                SENTENCES_FIELD: " ".join(
                    f"{s['start']}-{s['end']}:{s['label']}:{s['scores']['positive']:.3f}"
                    for s in row.get("sentences") or []
                ),
            }
        )
        return self._take()

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


class OutputFile:
    """An output file written as rows arrive: CSV or JSONL by extension, one line (CSV: one
    record) per input row.  Created at once (an unwritable path fails before any work), written
    to ``<name>.part`` and renamed into place only when complete."""

    def __init__(self, path: Path, sentences: bool = False) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        try:
            self._fh: IO[str] = self.part.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise DataError(path, f"cannot write the output file: {exc.strerror or exc}") from exc
        self.format = RowFormat("csv" if path.suffix.lower() == ".csv" else "jsonl", sentences)
        self._fh.write(self.format.header())
        self.counts = {"positive": 0, "negative": 0, "error": 0}

    def write(self, row: dict[str, Any]) -> None:
        key = "error" if row.get("error") else row.get("label")
        if key in self.counts:
            self.counts[key] += 1
        self._fh.write(self.format.line(row))

    def commit(self) -> dict[str, int]:
        """Close and move into place; returns the label counts."""
        self._fh.close()
        self.part.replace(self.path)
        return self.counts

    def abort(self) -> None:
        self._fh.close()
        self.part.unlink(missing_ok=True)


def write_output(
    rows: Iterable[dict[str, Any]], path: Path, sentences: bool = False
) -> dict[str, int]:
    """Write ``rows`` to ``path`` (see ``OutputFile``); returns the label counts."""
    out = OutputFile(path, sentences)
    try:
        for row in rows:
            out.write(row)
    except BaseException:
        out.abort()
        raise
    return out.commit()


def first(rows: Iterator[dict[str, Any]], n: int, keep: list[dict[str, Any]]) -> Iterator[Any]:
    """Pass ``rows`` through, keeping the first ``n`` in ``keep`` (for a summary)."""
    for row in itertools.islice(rows, n):
        keep.append(row)
        yield row
    yield from rows
