"""Streamed batches: windows, per-record errors, retention of reused results, early failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job
from rq.results import Result

from shared import batches, output
from shared.datasets import MAX_RECORD_BYTES, DataError, Review, read_reviews
from shared.queues import RESULT_TTL_S
from shared.schema import MAX_ID_CHARS
from tests.conftest import work


def reviews(n: int) -> list[Review]:
    return [Review(f"r{i}", "great film " * (1 + i % 7), line=i + 1) for i in range(n)]


def test_windows_answer_every_record_in_input_order(
    conn: Any, serving: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "WINDOW_ROWS", 7)  # many windows, each sorted by length
    items = [*reviews(40), Review("bad", "", line=41)]
    info = batches.submit(conn, lambda: items, batches.Options(chunk_size=3), progress=False)
    assert info.windows == 6 and info.rows == 41 and info.invalid == 1
    work(conn)
    rows = list(batches.results(conn, info.batch_id, timeout=10, progress=False))
    assert [r["id"] for r in rows] == [r.id for r in items]
    assert rows[-1]["error"] == "empty review" and all(r["label"] for r in rows[:-1])


def test_the_same_input_is_the_same_batch_and_is_not_enqueued_twice(conn: Any) -> None:
    items = reviews(10)
    first = batches.submit(conn, lambda: items, progress=False)
    again = batches.submit(conn, lambda: items, progress=False)
    assert first == again and conn.llen("rq:queue:sentiment-bulk") == first.jobs
    other = batches.submit(conn, lambda: items, batches.Options(top_words=3), progress=False)
    assert other.batch_id != first.batch_id  # the options are part of the fingerprint


def test_a_record_with_an_overlong_id_gets_its_own_error(conn: Any, serving: Any) -> None:
    items = [Review("x" * (MAX_ID_CHARS + 1), "a fine film"), Review("ok", "a fine film")]
    info = batches.submit(conn, lambda: items, progress=False)
    work(conn)
    bad, good = batches.results(conn, info.batch_id, timeout=10, progress=False)
    assert "id must have" in bad["error"] and good["label"] and good["error"] is None


def test_a_reused_result_lives_as_long_as_the_new_batch(conn: Any, serving: Any) -> None:
    items = reviews(3)
    info = batches.submit(conn, lambda: items, progress=False)
    work(conn)
    window = batches.Window.from_json(conn.lindex(batches.WINDOWS_KEY.format(info.batch_id), 0))
    (job_id,) = [j for j, _ in window.jobs]
    for key in (Job.key_for(job_id), Result.get_key(job_id)):
        conn.expire(key, 5)  # an old result about to expire
    batches.submit(conn, lambda: items, progress=False)  # --no-wait again, a day later
    for key in (Job.key_for(job_id), Result.get_key(job_id)):
        assert conn.ttl(key) > RESULT_TTL_S - 60
    rows = list(batches.results(conn, info.batch_id, timeout=5, progress=False))
    assert all(r["label"] for r in rows)


def test_an_unknown_batch_id_is_a_clear_error(conn: Any) -> None:
    with pytest.raises(DataError, match="unknown or expired batch id"):
        batches.load(conn, "nope")


def test_an_unwritable_output_fails_before_any_work(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # even root cannot create a file inside a file
    with pytest.raises(DataError, match="cannot write the output file"):
        output.OutputFile(not_a_folder / "out.jsonl")


def test_output_goes_to_a_part_file_until_complete(tmp_path: Path) -> None:
    out = output.OutputFile(tmp_path / "o.jsonl")
    out.write({"id": "a", "line": 1, "label": "positive", "error": None})
    assert not (tmp_path / "o.jsonl").exists() and (tmp_path / "o.jsonl.part").exists()
    assert out.commit() == {"positive": 1, "negative": 0, "error": 0}
    assert json.loads((tmp_path / "o.jsonl").read_text())["id"] == "a"


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_an_overlong_record_is_one_error_and_its_neighbours_are_read(
    tmp_path: Path, suffix: str
) -> None:
    huge = "x" * (MAX_RECORD_BYTES + 10)
    src = tmp_path / f"in{suffix}"
    if suffix == ".txt":
        src.write_text(f"before\n{huge}\nafter\n")
    elif suffix == ".jsonl":
        src.write_text("\n".join(json.dumps({"text": t}) for t in ("before", huge, "after")))
    else:
        src.write_text(f"review\nbefore\n{huge}\nafter\n")
    got = list(read_reviews(src, errors="keep"))
    assert [r.text for r in got] == ["before", "", "after"]
    assert got[1].error and "longer than" in got[1].error
    assert got[0].error is None and got[2].error is None


def test_an_archive_member_that_inflates_too_far_is_refused_unread(tmp_path: Path) -> None:
    import io
    import tarfile

    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, size in (("aclImdb/test/pos/1_9.txt", 20), ("aclImdb/test/neg/2_1.txt", None)):
            data = b"x" * (MAX_RECORD_BYTES + 1) if size is None else b"fine film here"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    got = list(read_reviews(archive, split="test", errors="keep"))
    assert [r.error is None for r in got] == [True, False]
    assert "longer than" in (got[1].error or "")
    with pytest.raises(DataError, match="longer than"):
        list(read_reviews(archive, split="test"))


def test_top_words_over_the_limit_is_refused_before_any_work(tmp_path: Path) -> None:
    """``--top-words 101`` used to raise SchemaError mid-run; now the command line says no."""
    import subprocess
    import sys

    src = tmp_path / "in.txt"
    src.write_text("fine\n")
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.enqueue", str(src), "--top-words", "101"],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--top-words must be in 0..100" in done.stderr
