"""The queue contract end to end on fakeredis: producer -> non-forking worker -> output file."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from shared import batches, output
from shared.queues import (
    QUEUE_BULK,
    QUEUE_INTERACTIVE,
    collect,
    enqueue_payloads,
    get_queue,
)
from shared.schema import JOB_FUNCTION, SchemaError, make_payload, validate_result
from shared.store import ModelStore
from tests.conftest import copy_store, publish_copy, work
from worker import jobs
from worker.reload import ModelHolder


def test_job_function_path_is_the_contract() -> None:
    module, _, name = JOB_FUNCTION.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is jobs.classify_batch


def test_result_schema_scores_words_phrases_and_per_review_errors(conn: Any, serving: Any) -> None:
    payload = make_payload(
        [
            ("a", "A wonderful superb film, not boring at all"),
            ("b", "   "),
            ("c", "awful boring mess"),
            ("d", "x" * 200_000),
        ],
        top_words=5,
    )
    (job_id,) = enqueue_payloads(get_queue(QUEUE_INTERACTIVE, conn), [payload])
    job = get_queue(QUEUE_INTERACTIVE, conn).fetch_job(job_id)
    assert job is not None and job.func_name == JOB_FUNCTION
    raw = conn.hget(f"rq:job:{job_id}", "data")
    assert raw is not None
    func, _, args, _ = json.loads(zlib.decompress(raw))  # JSON on the wire, not pickle
    assert func == JOB_FUNCTION and args == [payload]
    work(conn)
    outcome = collect(conn, [job_id], timeout=5)[job_id]
    assert outcome.error is None and outcome.result is not None
    result = validate_result(outcome.result, payload)
    a, b, c, d = result["results"]
    assert result["model_version"] == "tiny/v0001"
    assert a["label"] == "positive" and c["label"] == "negative"
    assert abs(sum(a["scores"].values()) - 1) < 1e-6
    assert 0 < len(a["top_words"]) <= 5
    assert abs(a["top_words"][0][1]) >= abs(a["top_words"][-1][1])  # sorted by |weight|
    assert any(w in {"wonderful", "superb"} and v > 0 for w, v in a["top_words"])
    assert all(len(p.split()) >= 2 and v > 0 for p, v in a["top_phrases"])
    assert b == {"id": "b", "error": "empty review"}
    assert "longer than" in d["error"]


def test_invalid_payload_goes_to_failed_registry_with_a_reason(conn: Any, serving: Any) -> None:
    queue = get_queue(QUEUE_BULK, conn)
    job = queue.enqueue(JOB_FUNCTION, {"schema": 99, "reviews": []}, retry=None)
    work(conn)
    assert job.id in FailedJobRegistry(QUEUE_BULK, connection=conn, serializer=JSONSerializer)
    job.refresh()
    assert "unsupported payload schema" in (job.exc_info or "")
    outcome = collect(conn, [job.id], timeout=2)[job.id]
    assert outcome.error is not None and "unsupported payload schema" in outcome.error


def test_deterministic_ids_make_reenqueue_a_no_op(conn: Any, serving: Any) -> None:
    payloads = [make_payload([("1", "great")]), make_payload([("2", "awful")])]
    queue = get_queue(QUEUE_BULK, conn)
    ids = enqueue_payloads(queue, payloads)
    assert enqueue_payloads(queue, payloads) == ids and queue.count == 2
    work(conn)
    assert enqueue_payloads(queue, payloads) == ids and queue.count == 0  # finished: not redone


def test_bulk_file_with_bad_lines_gives_one_output_line_per_input(
    conn: Any, serving: Any, tmp_path: Path
) -> None:
    src = tmp_path / "in.txt"
    lines = (
        [b"A wonderful superb film"] * 3
        + [b"", b"bad \xff utf8", b"awful boring dull", b"<b>loved</b> it &amp; more", b"\x00nul"]
        + [b"superb"] * 130
    )
    src.write_bytes(b"\n".join(lines) + b"\n")
    options = batches.Options(chunk_size=16, top_words=3)
    info = batches.submit(conn, batches.file_source([src]), options, progress=False)
    work(conn)
    rows = list(batches.results(conn, info.batch_id, timeout=5, progress=False))
    out = tmp_path / "out.jsonl"
    output.write_output(rows, out)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(written) == len(lines) and [r["line"] for r in written] == list(
        range(1, len(lines) + 1)
    )
    assert written[0]["label"] == "positive" and written[5]["label"] == "negative"
    assert written[3]["error"] == "empty review" and "UTF-8" in written[4]["error"]
    assert "NUL" in written[7]["error"] and written[6]["label"] == "positive"
    assert all(r["error"] is None for i, r in enumerate(written) if i not in (3, 4, 7))
    csv_out = tmp_path / "out.csv"
    output.write_output(rows, csv_out)
    import csv

    with csv_out.open() as fh:
        assert len(list(csv.DictReader(fh))) == len(lines)


def test_hot_reload_swaps_only_to_a_version_that_loads(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    store = copy_store(tiny_store, tmp_path / "store")
    holder = ModelHolder(store)
    holder.load()
    assert not holder.maybe_reload()  # nothing changed: one stat, no reload

    publish_copy(store)
    assert holder.maybe_reload() and holder.get().model_version == "tiny/v0002"
    broken = publish_copy(store)
    target = broken.path / "model.keras"
    target.chmod(0o644)
    target.write_bytes(b"corrupt")
    assert not holder.maybe_reload()
    assert holder.get().model_version == "tiny/v0002"  # kept serving the good version


def test_the_watcher_refuses_any_broken_version_and_then_serves_a_good_one(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    """A manifest without ``sequence_length`` (KeyError before the fix) and a model file that is
    not a model (an unexpected error while loading) are refused with a log line; the watcher
    thread keeps watching and serves the good version published next."""
    import time

    import structlog.testing

    store = copy_store(tiny_store, tmp_path / "store")
    holder = ModelHolder(store)
    holder.load()
    holder.watch(interval=0.05)
    try:

        def no_sequence_length(folder: Path, manifest: dict[str, Any]) -> None:
            manifest.pop("sequence_length", None)
            manifest.get("preprocessing", {}).pop("sequence_length", None)

        def not_a_model(folder: Path, manifest: dict[str, Any]) -> None:
            (folder / "model.keras").write_bytes(b"PK\x03\x04 not a model")

        for edit in (no_sequence_length, not_a_model):
            with structlog.testing.capture_logs() as logs:
                broken = publish_copy(store, edit=edit)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not [
                    e for e in logs if e.get("refused") == broken.version
                ]:
                    time.sleep(0.05)
            refusals = [e for e in logs if e.get("refused") == broken.version]
            assert refusals and refusals[0]["event"] == "model_reload_failed", logs
            assert not holder.maybe_reload()
            assert holder.get().model_version == "tiny/v0001"
        good = publish_copy(store)
        deadline = time.monotonic() + 60
        while not holder.maybe_reload() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder.get().model_version == f"tiny/{good.version}"
        assert holder._watcher is not None and holder._watcher.is_alive()
    finally:
        holder.stop()


def test_schema_rejects_bad_envelopes() -> None:
    for bad in [
        None,
        {"schema": 1},
        {"schema": 1, "reviews": [{"text": "x"}]},
        {"schema": 1, "reviews": [{"id": "a", "text": "x"}], "options": {"top_words": -1}},
    ]:
        with pytest.raises(SchemaError):
            from shared.schema import validate_payload

            validate_payload(bad)
    with pytest.raises(SchemaError):
        validate_result(
            {
                "schema": 1,
                "model_version": "m",
                "results": [
                    {
                        "id": "a",
                        "label": "positive",
                        "scores": {"negative": 0.5, "positive": 0.9},
                        "top_words": [],
                        "top_phrases": [],
                    }
                ],
            }
        )


def test_a_rollback_to_the_previous_version_swaps_without_loading_it_again(
    tiny_store: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from tests.conftest import copy_store, publish_copy
    from worker import reload

    store = copy_store(tiny_store, tmp_path)
    holder = reload.ModelHolder(store)
    first = holder.load()
    publish_copy(store)
    assert holder.maybe_reload() and holder.current.model_version == "tiny/v0002"
    assert holder.previous is first
    loads: list[str] = []
    real = reload.load_served
    monkeypatch.setattr(reload, "load_served", lambda s, v="LATEST": loads.append(v) or real(s, v))
    store.rollback()
    assert holder.maybe_reload()
    assert holder.current is first and loads == []  # the kept version, not a new load
