"""``sentiment-models`` against a real redis-server and real workers: list, show, promote,
rollback under load, prune."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shared import announcements
from shared.commands.models import main as models
from shared.local import RedisServer, start_worker, stop_processes, wait_for_workers
from shared.queues import QUEUE_INTERACTIVE, collect, connect, enqueue_payloads, get_queue
from shared.schema import make_payload
from shared.store import ModelStore
from tests.conftest import copy_store, env_for, publish_copy

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def served_versions(logs: list[Path], since: float) -> dict[str, list[str]]:
    """Per worker, the model versions of the jobs it finished after ``since`` (in order)."""
    from datetime import datetime

    out: dict[str, list[str]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if '"job_done"' not in line:
                continue
            event = json.loads(line)
            at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                out.setdefault(event["worker"], []).append(event["model_version"])
    return out


def test_rollback_under_load_no_failed_job_and_every_worker_goes_back(
    tiny_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    store = copy_store(tiny_store, tmp_path / "models")
    publish_copy(store)  # v0002 is LATEST, v0001 the previous
    with RedisServer.temporary() as server:
        env = env_for(server.url, store)
        for key in ("REDIS_URL", "MODEL_DIR", "MODEL_NAME"):
            monkeypatch.setenv(key, env[key])
        names = ["reg-0", "reg-1"]
        logs = [tmp_path / f"{n}.log" for n in names]
        procs = [start_worker(env, n, log) for n, log in zip(names, logs, strict=True)]
        stop = threading.Event()
        outcomes: list[Any] = []

        def load() -> None:
            conn = connect(server.url)
            queue = get_queue(QUEUE_INTERACTIVE, conn)
            i = 0
            while not stop.is_set():
                payload = make_payload([("r", f"A fine film, take {i}.")])
                ids = enqueue_payloads(queue, [payload])
                outcomes.extend(collect(conn, ids, timeout=60).values())
                i += 1

        thread = threading.Thread(target=load)
        try:
            wait_for_workers(server.url, procs, logs, names=names)
            thread.start()
            # list: versions, LATEST, and which worker serves what (from their announcements).
            assert models(["list", "--json"]) == 0
            rows = {r["version"]: r for r in json.loads(capsys.readouterr().out)}
            assert rows["v0002"]["latest"] and rows["v0001"]["previous"]
            assert sorted(rows["v0002"]["workers"]) == names
            assert models(["show", "v0002"]) == 0
            assert json.loads(capsys.readouterr().out)["version"] == "v0002"

            rolled_at = time.time()
            assert models(["rollback"]) == 0
            assert "v0002 -> v0001" in capsys.readouterr().out
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                after = served_versions(logs, rolled_at)
                if all(after.get(n, [])[-1:] == ["tiny/v0001"] for n in names):
                    break
                time.sleep(0.2)
            after = served_versions(logs, rolled_at)
            assert all(after[n][-1] == "tiny/v0001" for n in names), after
            assert store.latest() == "v0001"
            decision = announcements.last_decision(connect(server.url))
            assert "rolled back" in decision["summary"]
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()
            stop_processes(procs, timeout=15)
        assert outcomes and all(o.error is None for o in outcomes), [
            o.error for o in outcomes if o.error
        ][:3]
        failed = connect(server.url).zcard(f"rq:registry:failed:{QUEUE_INTERACTIVE}")
        assert failed == 0


def test_promote_and_prune_never_touch_latest_or_the_previous_version(
    tiny_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    store = copy_store(tiny_store, tmp_path / "models")
    for _ in range(4):
        publish_copy(store)  # v0001 .. v0005
    with RedisServer.temporary() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.setenv("MODEL_DIR", str(store.root))
        monkeypatch.setenv("MODEL_NAME", store.name)
        assert models(["promote", "v0002"]) == 0  # LATEST v0002, previous v0005
        assert models(["prune", "--keep", "1"]) == 0
        assert store.versions() == ["v0002", "v0005"]
        assert models(["promote", "v0009"]) == 2
        assert "no such version" in capsys.readouterr().err
        assert models(["rollback"]) == 0 and store.latest() == "v0005"
        assert models(["list"]) == 0
        listing = capsys.readouterr().out
        assert "LATEST" in listing and "v0002" in listing
