"""Dynamic batching (``worker.batching``): waiting interactive jobs share one forward pass, and
each still ends with its own answer, identical to the one it gets alone.

Against a real redis-server and real ``sentiment-worker`` processes with the tiny model; the
take-ahead under hundreds of kills is ``tests/test_delivery.py`` (its light worker takes ahead
as the service does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from shared import reliable
from shared.local import RedisServer, start_worker, stop_processes, wait_for_workers
from shared.queues import QUEUE_INTERACTIVE, collect, enqueue_payloads, get_queue
from shared.schema import JOB_FUNCTION, make_payload
from shared.store import ModelStore
from tests.conftest import env_for

TEXTS = [
    "A wonderful, moving film with superb acting.",
    "Dull, far too long and badly written.",
    "Not bad at all.",
    "I fell asleep twice; the plot makes no sense.",
    "The best thing I have seen this year, a real masterpiece of suspense and wit.",
    "meh",
    "Terrible. Awful. Boring.",
    "It was fine, I guess, but the ending dragged on and on and on for far too long.",
    "Loved every minute of it!",
    "Stopped working after a week.",
    "Great cast, weak script.",
    "An honest little film.",
]


def test_take_more_moves_waiting_ids_in_order_without_waiting() -> None:
    conn = fakeredis.FakeRedis()
    conn.rpush("rq:queue:q", "a", "b", "c")
    assert reliable.take_more(conn, "w", "rq:queue:q", 2) == ["a", "b"]
    assert conn.lrange(reliable.PROCESSING_KEY.format("w"), 0, -1) == [b"a", b"b"]
    assert reliable.take_more(conn, "w", "rq:queue:q", 5) == ["c"]
    assert reliable.take_more(conn, "w", "rq:queue:q", 5) == []
    assert reliable.take_more(conn, "w", "rq:queue:q", 0) == []


def test_jobs_taken_beyond_one_pass_go_back_to_the_head_of_the_queue_in_order() -> None:
    """Two workers, jobs of 128 reviews: the first holds one pass (two jobs), not every job."""
    from worker.batching import MAX_PASS_REVIEWS, Batcher

    conn = fakeredis.FakeRedis()
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    half = MAX_PASS_REVIEWS // 2
    payloads = [
        make_payload([(f"{j}-{i}", f"Fine film {j}.") for i in range(half)]) for j in range(6)
    ]
    ids = enqueue_payloads(queue, payloads)
    found = reliable.take(conn, "w", [queue.key])
    assert found is not None and found[1] == ids[0]
    lead = Job.fetch(ids[0], connection=conn, serializer=JSONSerializer)
    calls: list[int] = []

    def explain(served: Any, reviews: list[Any], *options: Any) -> list[dict[str, Any]]:
        calls.append(len(reviews))
        return [{"id": r[0] if isinstance(r, list | tuple) else r["id"]} for r in reviews]

    class Served:
        model_version = "m/v0001"

    batcher = Batcher(conn, "w", JSONSerializer, lambda job: True, 256)
    group = batcher.prepare(lead, queue, Served(), explain)
    assert [j.id for j in group] == ids[:2] and calls == [MAX_PASS_REVIEWS]
    assert conn.lrange(reliable.PROCESSING_KEY.format("w"), 0, -1) == [i.encode() for i in ids[:2]]
    assert conn.lrange(queue.key, 0, -1) == [i.encode() for i in ids[2:]]
    reliable.give_back(conn, "w", queue.key, ["not-held"])  # only what the worker holds
    assert conn.llen(queue.key) == 4


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("{") and f'"{name}"' in line
    ]


def _run(store: ModelStore, tmp_path: Path, batch_jobs: int) -> tuple[dict[str, Any], Path]:
    """Every job waiting before the worker starts; the answers by text, and the worker's log."""
    with RedisServer.temporary() as server:
        conn = Redis.from_url(server.url)
        queue = get_queue(QUEUE_INTERACTIVE, conn)
        ids = enqueue_payloads(queue, [make_payload([(f"r{i}", t)]) for i, t in enumerate(TEXTS)])
        raw = Queue(QUEUE_INTERACTIVE, connection=conn, serializer=JSONSerializer)
        broken = raw.enqueue(JOB_FUNCTION, {"reviews": "not a list"})  # fails validation
        ids += enqueue_payloads(queue, [make_payload([("x", "A superb, gorgeous film.")], 3)])
        log = tmp_path / f"worker-{batch_jobs}.log"
        env = {**env_for(server.url, store), "WORKER_BATCH_JOBS": str(batch_jobs)}
        proc = start_worker(env, f"batch{batch_jobs}", log)
        try:
            wait_for_workers(server.url, [proc], [log], names=[f"batch{batch_jobs}"])
            # The broken job too: it fails alone, and may end after the jobs that shared a pass.
            outcomes = collect(conn, [*ids, broken.id], timeout=120)
            assert Job.fetch(broken.id, connection=conn).get_status() == JobStatus.FAILED
            assert outcomes[broken.id].result is None and outcomes[broken.id].error
        finally:
            stop_processes([proc])
        answers = {}
        for job_id in ids:
            assert Job.fetch(job_id, connection=conn).get_status() == JobStatus.FINISHED
            result = outcomes[job_id].result
            assert result is not None
            for review in result["results"]:
                answers[review["id"]] = review
        assert conn.llen(reliable.PROCESSING_KEY.format(f"batch{batch_jobs}")) == 0
    return answers, log


def test_waiting_jobs_share_a_pass_and_answer_as_they_would_alone(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    batched, log = _run(tiny_store, tmp_path, batch_jobs=8)
    passes = _events(log, "batch_pass")
    assert passes, "no job shared a pass"
    assert all(1 < p["jobs"] <= 8 for p in passes)
    # 13 valid jobs waited: at least two passes were needed, and most jobs were in one.
    assert sum(p["jobs"] for p in passes) >= 10
    alone, alone_log = _run(tiny_store, tmp_path, batch_jobs=1)
    assert _events(alone_log, "batch_pass") == []
    assert batched.keys() == alone.keys() == {f"r{i}" for i in range(len(TEXTS))} | {"x"}
    for key, answer in batched.items():
        other = alone[key]
        assert answer["label"] == other["label"], key
        assert answer["uncertain"] == other["uncertain"], key
        for label, score in answer["scores"].items():
            assert score == pytest.approx(other["scores"][label], abs=1e-5), key
        # Explanations are the review's own: the pass batches reviews of one length only.
        assert answer["top_words"] == other["top_words"], key
        assert answer["top_phrases"] == other["top_phrases"], key
        assert answer["n_tokens"] == other["n_tokens"]
    assert len(batched["x"]["top_words"]) <= 3  # its own options, though it shared a pass


def test_an_answer_is_given_once_for_its_payload_by_its_version() -> None:
    from worker.batching import Batcher

    batcher = Batcher(fakeredis.FakeRedis(), "w", JSONSerializer, lambda job: True, 8)
    payload = make_payload([("a", "Fine.")])
    batcher._kept["j1"] = ("m/v0001", payload, {"results": []})
    assert batcher.take("j1", payload, "m/v0002") is None  # another version serves now
    batcher._kept["j1"] = ("m/v0001", payload, {"results": []})
    assert batcher.take("j1", make_payload([("a", "Other.")]), "m/v0001") is None
    batcher._kept["j1"] = ("m/v0001", payload, {"results": []})
    assert batcher.take("j1", make_payload([("a", "Fine.")]), "m/v0001") is None  # fetched again
    batcher._kept["j1"] = ("m/v0001", payload, {"results": ["kept"]})
    assert batcher.take("j1", payload, "m/v0001") == {"results": ["kept"]}
    assert batcher.take("j1", payload, "m/v0001") is None  # given out once
