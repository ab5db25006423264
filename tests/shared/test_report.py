"""The batch summary (shared.report) from output rows: counts, targets with examples, escaping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.report import BatchReport


def _row(verdict: str, label: str, text: str, parts: list[tuple[str, str, list[str]]]) -> Any:
    sentences, pos = [], 0
    for sentence, side, targets in parts:
        start = text.index(sentence, pos)
        pos = start + len(sentence)
        sentences.append(
            {
                "start": start,
                "end": pos,
                "label": side,
                "scores": {side: 0.9, "negative" if side == "positive" else "positive": 0.1},
                "targets": targets,
            }
        )
    about: dict[str, list[str]] = {"positive": [], "negative": []}
    for _, side, targets in parts:
        about[side] += targets
    row = {
        "label": label,
        "verdict": verdict,
        "reasons": ["superb"] if label == "positive" else ["awful"],
        "sentences": sentences,
        "about": about,
        "model_version": "m/v1",
    }
    return row, text


def test_counts_targets_examples_and_markup_stays_text() -> None:
    report = BatchReport("Batch <b>x</b>")
    rows = [
        _row(
            "mixed",
            "negative",
            "The acting is superb. The <script>plot</script> is awful.",
            [
                ("The acting is superb.", "positive", ["acting"]),
                ("The <script>plot</script> is awful.", "negative", ["plot"]),
            ],
        ),
        _row(
            "positive", "positive", "Superb acting.", [("Superb acting.", "positive", ["acting"])]
        ),
        _row("neutral", "positive", "It opens in May.", [("It opens in May.", "positive", [])]),
    ]
    for row, text in rows:
        report.add(row, text)
    report.add({"error": "empty review"})
    summary = report.summary()
    assert summary["rows"] == 4 and summary["errors"] == 1
    assert summary["verdicts"] == {"positive": 1, "negative": 0, "mixed": 1, "neutral": 1}
    assert summary["targets"][0] == {"target": "acting", "positive": 2, "negative": 0}
    assert {"target": "plot", "positive": 0, "negative": 1} in summary["targets"]
    assert dict(summary["words"]["positive"]) == {"superb": 1}  # the neutral row's are not
    page = report.html()
    assert "<script>" not in page and "&lt;script&gt;plot&lt;/script&gt;" in page
    assert "Batch &lt;b&gt;x&lt;/b&gt;" in page and "<svg id='verdict-chart'" in page
    assert "The acting is superb." in page and "Superb acting." in page


def test_rows_without_sentences_still_give_verdicts_and_words() -> None:
    report = BatchReport("plain")
    report.add({"label": "negative", "verdict": "negative", "reasons": ["dull"]})
    summary = report.summary()
    assert summary["verdicts"]["negative"] == 1 and not summary["targets"]
    assert "id='no-targets'" in report.html()


def test_an_unwritable_report_path_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.commands import enqueue

    src = tmp_path / "in.txt"
    src.write_text("Great film.\n")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    out = tmp_path / "out.jsonl"
    code = enqueue.main([str(src), "-o", str(out), "--report", str(tmp_path / "no" / "r.html")])
    assert code == 2 and "cannot write the report" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]  # no output file, no part file left
