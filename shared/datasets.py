"""Streaming readers for review files: aclImdb (directory or .tar.gz), CSV, JSONL and plain text.

Usage::

    for review in read_reviews(Path("reviews.csv")):
        ...

Every reader yields :class:`Review` records one at a time (the 100k-file IMDB archive is read in
place, never unpacked or loaded whole).  Malformed input raises :class:`DataError` naming the
file and line; with ``errors="keep"`` the reader instead yields a ``Review`` whose ``error`` says
what was wrong, so a bulk job can answer every input line (one output line per input line).

Formats, chosen from the path:

* ``aclImdb`` layout (Maas et al. 2011), as a directory or the original ``.tar.gz``:
  ``<split>/{pos,neg,unsup}/<id>_<rating>.txt``; the rating is kept as metadata.
* ``.csv`` with a ``review`` column and, for labelled data, ``sentiment`` (``positive``/``negative``
  or ``1``/``0``), as in the Peltarion tutorial; an optional ``id`` column.
* ``.jsonl``/``.ndjson``: one object a line with ``text`` (or ``review``), optional ``label`` (or
  ``sentiment``) and ``id``.
* anything else that is text (``.txt``): one unlabelled review per line.

Finding (or downloading) the IMDB archive and its movie lists: ``shared.aclimdb``.
"""

from __future__ import annotations

import csv
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

LABEL_VALUES = {
    "negative": 0,
    "neg": 0,
    "0": 0,
    "positive": 1,
    "pos": 1,
    "1": 1,
}
SPLITS = ("train", "test", "unsup")
_ACL_NAME = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_SNIFF_BYTES = 8192
#: The largest record read: a line, a CSV field or an archive member (the longest review the
#: queue accepts is far shorter; a larger record gets an error and is skipped, not loaded).
MAX_RECORD_BYTES = 1 << 20

Errors = Literal["raise", "keep"]


class DataError(ValueError):
    """Input data cannot be read; the message names the file and, where known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.reason = str(path), line, message


@dataclass(frozen=True)
class Review:
    """One review as read from a file; ``label`` is 0/1 or None when unlabelled."""

    id: str
    text: str
    label: int | None = None
    rating: int | None = None
    source: str = ""
    line: int | None = None
    error: str | None = None


def parse_label(value: object, path: Path, line: int | None) -> int:
    """Map ``positive/negative/pos/neg/1/0`` (any case) to 1/0, or raise DataError."""
    key = str(value).strip().lower()
    if key not in LABEL_VALUES:
        raise DataError(path, f"unknown label {value!r} (expected positive/negative or 1/0)", line)
    return LABEL_VALUES[key]


def detect_format(path: Path) -> str:
    """Return one of ``aclimdb-dir``, ``aclimdb-tar``, ``csv``, ``jsonl``, ``txt``."""
    if path.is_dir():
        return "aclimdb-dir"
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "aclimdb-tar"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "txt"


def read_reviews(
    path: Path, split: str = "test", errors: Errors = "raise", labelled: bool | None = None
) -> Iterator[Review]:
    """Stream the reviews in ``path``; ``split`` applies to the aclImdb layout only.

    ``labelled=True`` requires a label on every review; ``None`` accepts both.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    fmt = detect_format(path)
    if fmt == "aclimdb-dir":
        yield from _apply_policy(_read_aclimdb_dir(path, split), errors)
    elif fmt == "aclimdb-tar":
        yield from _apply_policy(_read_aclimdb_tar(path, split), errors)
    else:
        _check_text_file(path)
        reader = {"csv": _read_csv, "jsonl": _read_jsonl, "txt": _read_txt}[fmt]
        yield from _apply_policy(reader(path, labelled), errors)


def sniff(path: Path) -> None:
    """DataError at once when a file plainly cannot be read (empty, binary, compressed or UTF-16
    text): a check of its first bytes, for answering an upload before reading it all."""
    if detect_format(Path(path)) in ("csv", "jsonl", "txt"):
        _check_text_file(Path(path))


def _apply_policy(reviews: Iterator[Review], errors: Errors) -> Iterator[Review]:
    for review in reviews:
        if review.error is not None and errors == "raise":
            raise DataError(review.source, review.error, review.line)
        yield review


def _check_text_file(path: Path) -> None:
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise DataError(path, "file is empty")
    if head[:2] == b"\x1f\x8b":
        raise DataError(path, "file is gzip-compressed; decompress it first (or give a .tar.gz)")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(path, "file is UTF-16; convert it to UTF-8")
    control = sum(1 for b in head if b < 32 and b not in b"\t\n\r\f")
    if control > max(2, len(head) // 50):  # a stray NUL is a bad line; many mean a binary file
        raise DataError(path, "file looks binary (control bytes), not text")


def _decode(raw: bytes, path: Path, line: int) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "replace"), f"invalid UTF-8 at byte {exc.start} of the line"


def _lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line without its end) for each line; ``None`` for a line over the limit,
    whose rest is skipped without being held in memory."""
    number = 0
    while raw := fh.readline(MAX_RECORD_BYTES + 1):
        number += 1
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            while (rest := fh.readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        yield number, raw.rstrip(b"\r\n")


_TOO_LONG = f"record longer than {MAX_RECORD_BYTES:,} bytes; skipped"


def _read_txt(path: Path, labelled: bool | None) -> Iterator[Review]:
    if labelled:
        raise DataError(path, "plain-text files hold unlabelled reviews; use CSV or JSONL")
    with path.open("rb") as fh:
        for number, raw in _lines(fh):
            review_id = f"{path.name}:{number}"
            if raw is None:
                yield Review(review_id, "", source=str(path), line=number, error=_TOO_LONG)
                continue
            text, error = _decode(raw, path, number)
            if error is None and "\x00" in text:
                error = "line contains NUL bytes"
            yield Review(review_id, text, source=str(path), line=number, error=error)


def _read_jsonl(path: Path, labelled: bool | None) -> Iterator[Review]:
    with path.open("rb") as fh:
        for number, raw in _lines(fh):
            default_id = f"{path.name}:{number}"
            if raw is None:
                yield Review(default_id, "", source=str(path), line=number, error=_TOO_LONG)
                continue
            text, error = _decode(raw, path, number)
            if error is not None:
                yield Review(default_id, "", source=str(path), line=number, error=error)
                continue
            yield _jsonl_record(text, path, number, default_id, labelled)


def _jsonl_record(
    text: str, path: Path, number: int, default_id: str, labelled: bool | None
) -> Review:
    def bad(message: str) -> Review:
        return Review(default_id, "", source=str(path), line=number, error=message)

    if not text.strip():
        return bad("empty line (expected a JSON object)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return bad(f"invalid JSON: {exc.msg}")
    if not isinstance(obj, dict):
        return bad("expected a JSON object with a 'text' field")
    body = obj.get("text", obj.get("review"))
    if not isinstance(body, str):
        return bad("missing or non-string 'text' field")
    raw_label = obj.get("label", obj.get("sentiment"))
    label = None
    if raw_label is not None:
        try:
            label = parse_label(raw_label, path, number)
        except DataError as exc:
            return bad(exc.reason)
    elif labelled:
        return bad("missing 'label' field")
    review_id = str(obj["id"]) if obj.get("id") is not None else default_id
    return Review(review_id, body, label=label, source=str(path), line=number)


def _bounded(fh: IO[str]) -> Iterator[str]:
    """The file's lines for the CSV parser; a line over the limit is cut just past it (the
    parser then reports that record's field as too large and goes on)."""
    while line := fh.readline(MAX_RECORD_BYTES + 1):
        if len(line) > MAX_RECORD_BYTES and not line.endswith("\n"):
            while (rest := fh.readline(1 << 16)) and not rest.endswith("\n"):
                pass
            line += "\n"
        yield line


def _read_csv(path: Path, labelled: bool | None) -> Iterator[Review]:
    csv.field_size_limit(MAX_RECORD_BYTES)
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(_bounded(fh))
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "review" not in fields:
            raise DataError(path, f"missing column 'review' (header has {fields})", 1)
        if labelled and "sentiment" not in fields:
            raise DataError(path, "missing column 'sentiment' for labelled data", 1)
        reader.fieldnames = fields
        start = 2
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field larger than field limit" not in str(exc):
                    raise DataError(path, f"malformed CSV: {exc}", reader.line_num) from exc
                yield Review(
                    f"{path.name}:{start}", "", source=str(path), line=start, error=_TOO_LONG
                )
            else:
                yield _csv_record(row, path, start, f"{path.name}:{start}")
            start = reader.line_num + 1


def _csv_record(row: dict[str, str | None], path: Path, line: int, default_id: str) -> Review:
    body = row.get("review")
    review_id = (row.get("id") or "").strip() or default_id
    if body is None:
        return Review(review_id, "", source=str(path), line=line, error="row has too few columns")
    if any("\udc80" <= ch <= "\udcff" for ch in body):
        return Review(review_id, "", source=str(path), line=line, error="invalid UTF-8 in row")
    label = None
    raw_label = row.get("sentiment")
    if raw_label is not None and raw_label.strip():
        try:
            label = parse_label(raw_label, path, line)
        except DataError as exc:
            return Review(review_id, body, source=str(path), line=line, error=exc.reason)
    elif "sentiment" in row:
        return Review(review_id, body, source=str(path), line=line, error="empty 'sentiment'")
    return Review(review_id, body, label=label, source=str(path), line=line)


# --- aclImdb -------------------------------------------------------------------------------


def _acl_review(name: str, raw: bytes | None, source: Path) -> Review | None:
    """The review a member or file named like ``<split>/<pos|neg|unsup>/<id>_<rating>.txt``
    holds; ``raw`` is None when the file is over the size limit (an error record)."""
    match = _ACL_NAME.search(name)
    if match is None:
        return None
    split, polarity, number, rating = match.groups()
    review_id = f"{split}/{polarity}/{number}_{rating}"
    label = None if polarity == "unsup" else int(polarity == "pos")
    if raw is None:
        return Review(review_id, "", label=label, source=str(source), error=_TOO_LONG)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}/{name}", f"invalid UTF-8 at byte {exc.start}") from exc
    return Review(review_id, text, label=label, rating=int(rating) or None, source=str(source))


def _wanted(name: str, split: str) -> bool:
    if split == "unsup":
        return "/train/unsup/" in f"/{name}"
    return f"/{split}/pos/" in f"/{name}" or f"/{split}/neg/" in f"/{name}"


def _read_aclimdb_dir(path: Path, split: str) -> Iterator[Review]:
    if split not in SPLITS:
        raise DataError(path, f"unknown split {split!r} (expected one of {SPLITS})")
    seen = 0
    # Match on the absolute path, so the root, a split folder or a pos/ folder all work.
    for file in sorted(path.resolve().rglob("*.txt")):
        name = file.as_posix()
        if not _wanted(name, split):
            continue
        raw = file.read_bytes() if file.stat().st_size <= MAX_RECORD_BYTES else None
        review = _acl_review(name, raw, path)
        if review is not None:
            seen += 1
            yield review
    if seen == 0:
        raise DataError(
            path, f"no aclImdb reviews for split {split!r} (expected <split>/pos/*.txt)"
        )


def _read_aclimdb_tar(path: Path, split: str) -> Iterator[Review]:
    if split not in SPLITS:
        raise DataError(path, f"unknown split {split!r} (expected one of {SPLITS})")
    seen = 0
    try:
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                if not member.isfile() or not _wanted(member.name, split):
                    continue
                fh: IO[bytes] | None = archive.extractfile(member)
                if fh is None:
                    continue
                # The size in the header is what the member inflates to: checked before reading.
                raw = fh.read() if member.size <= MAX_RECORD_BYTES else None
                review = _acl_review(member.name, raw, path)
                if review is not None:
                    seen += 1
                    yield review
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(path, f"cannot read archive: {exc}") from exc
    if seen == 0:
        raise DataError(path, f"no aclImdb reviews found for split {split!r}")
