"""A corpus of bad input, through the producer, a real (in-process, non-forking) worker and back.

Every kind gets a clear error or a result, the processes keep going, and every input record
ends in exactly one output line.  The bot's kinds (non-text messages, floods, markup, long
texts) are in tests/bot/.  Property-based tests cover the text pipeline (tests/shared) and the
job schema (here).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import batches, output
from shared.datasets import DataError
from shared.schema import (
    MAX_REVIEW_CHARS,
    SchemaError,
    make_payload,
    review_error,
    validate_payload,
)
from tests.conftest import work

GOOD = "A wonderful, superb film."
# (kind, file name, content, {record number: expected error fragment (None: a label)})
LINE_KINDS: list[tuple[str, str, bytes, dict[int, str | None]]] = [
    ("empty line", "a.txt", f"{GOOD}\n\n{GOOD}\n".encode(), {1: None, 2: "empty", 3: None}),
    ("whitespace only", "b.txt", b" \t \n", {1: "empty"}),
    ("1 MB review", "c.txt", b"superb " * 150_000 + b"\n", {1: "longer than"}),
    ("review just under the limit", "d.txt", b"x" * (MAX_REVIEW_CHARS - 1) + b"\n", {1: None}),
    ("invalid UTF-8", "e.txt", b"bad \xff\xfe bytes\n", {1: "UTF-8"}),
    ("NUL byte", "f.txt", b"nul \x00 inside\n", {1: "NUL"}),
    ("BOM", "g.txt", b"\xef\xbb\xbf" + GOOD.encode() + b"\n", {1: None}),
    ("CRLF", "h.txt", f"{GOOD}\r\n{GOOD}\r\n".encode(), {1: None, 2: None}),
    ("emoji only", "i.txt", "😍😍😍\n".encode(), {1: None}),
    ("right-to-left text", "j.txt", "فيلم رائع جدا \u200f שלום\n".encode(), {1: None}),
    ("HTML and script", "k.txt", b'<script>alert("x")</script><br />superb &amp; fun\n', {1: None}),
    ("punctuation only", "l.txt", b"!!! ... ??? ---\n", {1: None}),
    ("zero-width characters", "m.txt", "\u200b\u200c\u200d\n".encode(), {1: None}),
    ("control characters", "n.txt", b"\x07\x08 bell and backspace\n", {1: None}),
    ("one 50k-character word", "o.txt", b"a" * 50_000 + b"\n", {1: None}),
    ("combining marks", "p.txt", "g\u0301\u0302o\u0303o\u0304d\u0305\n".encode(), {1: None}),
    ("CJK", "q.txt", "这部电影非常好看\n".encode(), {1: None}),
    ("numbers only", "r.txt", b"10/10 7.5 1,000\n", {1: None}),
    ("tabs and form feed", "s.txt", b"superb\tfilm\x0cyes\n", {1: None}),
    ("lone surrogate escape", "t.txt", b"\xed\xa0\x80 surrogate\n", {1: "UTF-8"}),
    (
        "CSV embedded newlines and quotes",
        "u.csv",
        b'review,sentiment\n"line one\nline ""two""",positive\n"' + GOOD.encode() + b'",negative\n',
        {2: None, 4: None},  # CSV records are numbered by the file line they start on
    ),
    ("CSV duplicate ids", "v.csv", f"id,review\n7,{GOOD}\n7,{GOOD}\n".encode(), {2: None, 3: None}),
    (
        "CSV extra and empty cells",
        "w.csv",
        f"review,x\n{GOOD},1,2\n,\n".encode(),
        {2: None, 3: "empty"},
    ),
    ("CSV unknown label", "x.csv", f"review,sentiment\n{GOOD},meh\n".encode(), {2: "label"}),
    (
        "JSONL malformed line",
        "y.jsonl",
        b'{"text": "ok superb"}\n{"text": \n',
        {1: None, 2: "JSON"},
    ),
    ("JSONL text not a string", "z.jsonl", b'{"text": 42}\n{"text": null}\n', {1: "", 2: ""}),
    ("JSONL missing text", "aa.jsonl", b'{"review_body": "x"}\n', {1: "text"}),
    ("JSONL not an object", "ab.jsonl", b'["a", "b"]\n', {1: ""}),
]
FILE_KINDS: list[tuple[str, str, bytes, str]] = [
    ("binary file", "bin.txt", bytes(range(256)) * 8, "binary"),
    ("gzip given as text", "gz.txt", gzip.compress(GOOD.encode()), "gzip"),
    ("empty file", "empty.txt", b"", "empty"),
    ("UTF-16 file", "u16.txt", GOOD.encode("utf-16"), "UTF-16"),
    ("CSV without a review column", "nocol.csv", b"title,stars\nx,3\n", "column"),
    ("PNG with a .jsonl name", "img.jsonl", b"\x89PNG\r\n\x1a\n" + bytes(64), "binary"),
]


def test_the_corpus_has_at_least_30_kinds() -> None:
    assert len(LINE_KINDS) + len(FILE_KINDS) + 1 >= 30  # +1: a path that does not exist


def _through_the_queue(redis: Any, files: list[Path], tmp_path: Path) -> list[dict[str, Any]]:
    options = batches.Options(chunk_size=8, top_words=3)
    info = batches.submit(redis, batches.file_source(files), options, progress=False)
    work(redis)
    out = tmp_path / "out.jsonl"
    output.write_output(batches.results(redis, info.batch_id, timeout=30, progress=False), out)
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


def test_every_bad_record_gets_a_clear_error_or_a_result_and_nothing_is_lost(
    conn: Any,
    serving: Any,
    tmp_path: Path,
) -> None:
    files = []
    for _, name, content, _ in LINE_KINDS:
        (tmp_path / name).write_bytes(content)
        files.append(tmp_path / name)
    rows = _through_the_queue(conn, files, tmp_path)
    assert len(rows) == sum(len(expect) for *_, expect in LINE_KINDS)
    position = 0
    for kind, _, _, expect in LINE_KINDS:  # output rows follow the input, file by file
        got = rows[position : position + len(expect)]
        position += len(expect)
        assert [r["line"] for r in got] == sorted(expect), kind
        for row in got:
            fragment = expect[row["line"]]
            if fragment is None:
                assert row["error"] is None and row["label"] in ("positive", "negative"), kind
                assert 0.0 <= row["scores"]["positive"] <= 1.0
            else:
                assert row["error"] and fragment in row["error"], (kind, row["error"])
                assert "Traceback" not in row["error"] and len(row["error"]) < 300
    assert [r["id"] for r in rows if r["id"] == "7"] == ["7", "7"]  # both answered, in order


@pytest.mark.parametrize(("kind", "name", "content", "message"), FILE_KINDS)
def test_unusable_files_get_one_clear_error(
    kind: str, name: str, content: bytes, message: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as raised:
        list(batches.file_source([path])())
    assert name in str(raised.value) and "Traceback" not in str(raised.value)


def test_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(batches.file_source([tmp_path / "nope.txt"])())


# -- the job schema, property-based ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"schema": st.sampled_from([1, 2, "1"]), "reviews": json_values},
            optional={"options": json_values},
        ),
    )
)
def test_any_payload_is_accepted_or_refused_with_schema_error(payload: Any) -> None:
    try:
        validate_payload(payload)
    except SchemaError as exc:
        assert str(exc)


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=40), st.text(max_size=200)), min_size=1, max_size=20
    ),
    st.integers(0, 100),
)
def test_made_payloads_validate_and_bad_texts_are_per_review_errors(
    reviews: list[tuple[str, str]], top: int
) -> None:
    payload = validate_payload(make_payload(reviews, top))
    assert [r["text"] for r in payload["reviews"]] == [t for _, t in reviews]
    for _, text in reviews:
        error = review_error(text)
        assert error is None or isinstance(error, str)
        assert (error is None) == bool(text.strip() and "\x00" not in text)
