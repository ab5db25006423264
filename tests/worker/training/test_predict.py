"""The in-process main job answers every input line, in order, errors included."""

import json
from pathlib import Path
from typing import Any

import pytest

from shared.schema import MAX_REVIEW_CHARS
from worker.training.commands import predict


def test_every_input_line_gets_exactly_one_output_line(
    tiny_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.txt"
    lines = [
        b"A wonderful superb film",
        b"",
        b"awful \xff bytes",
        b"boring dull mess",
        b"<script>alert('x')</script> loved it",
        b"x" * (MAX_REVIEW_CHARS + 1),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("MODEL_DIR", str(tiny_store.root))
    monkeypatch.setenv("MODEL_NAME", tiny_store.name)
    assert predict.main([str(src), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["label"] == "positive" and rows[3]["label"] == "negative"
    assert rows[1]["error"] == "empty review" and "UTF-8" in rows[2]["error"]
    assert rows[4]["label"] == "positive" and "longer than" in rows[5]["error"]
    assert all(r["model_version"] == "tiny/v0001" for r in rows)
    assert any(w == "superb" for w, _ in rows[0]["top_words"])  # explained like the queue


def test_csv_output_matches_the_queue_format(tiny_store: Any, tmp_path: Path) -> None:
    from shared.datasets import Review
    from shared.output import write_output
    from worker.model.served import classify_reviews, load_served

    rows = list(
        classify_reviews(
            [
                Review("a", "loved it"),
                Review("b", " "),
                Review("c", "Der Film war wirklich langweilig und viel zu lang."),
            ],
            load_served(tiny_store),
            progress=False,
        )
    )
    out = tmp_path / "o.csv"
    write_output(rows, out)
    text = out.read_text().splitlines()
    assert (
        text[0]
        == "id,line,label,verdict,negative,positive,uncertain,language,top_words,top_phrases,"
        "reasons,model_version,error"
    )
    assert text[1].startswith("a,,positive,") and text[2].endswith("empty review")
    assert ",True,de," in text[3] and ",en," in text[1]  # uncertain, language
    assert rows[0]["top_words"] and rows[0]["top_words"][0][0] == "loved"


def test_missing_model_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "none"))
    assert predict.main([str(tmp_path / "in.txt")]) == 2
    assert "no published version" in capsys.readouterr().err
