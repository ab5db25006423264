"""Faults during a 25k bulk run: a worker SIGKILLed mid-batch, then redis-server killed.

    python bench/faults.py [--n 25000]

Real data (IMDB test split), a real redis-server with append-only persistence (as in
docker-compose.yml), 2 workers, ``sentiment-enqueue`` waiting for the output file:

1. at ~25% of the results, one worker gets SIGKILL while it holds a job; a replacement starts;
2. at ~60%, redis-server gets SIGKILL and is restarted on the same port and folder.

The producer is re-run if it gave up (it is idempotent).  Reported: whether the output has
exactly one line per input line, none missing, none duplicated, no errors; how many jobs ran
twice; the wall time against an undisturbed run of the same input.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from redis import Redis

from shared.config import Settings
from shared.datasets import read_reviews
from shared.local import (
    RedisServer,
    start_producer,
    start_worker,
    stop_processes,
    wait_for_workers,
    worker_env,
)

QUEUE = "rq:queue:sentiment-bulk"


def producer(env: dict[str, str], src: Path, out: Path) -> subprocess.Popen[bytes]:
    return start_producer(env, src, out, "--timeout", "600")


def finished(conn: Redis) -> int:
    try:
        return int(conn.zcard("rq:finished:sentiment-bulk"))
    except Exception:
        return -1


def run(src: Path, n: int, tmp: Path, disturb: bool) -> dict[str, object]:
    workdir = tmp / ("faults" if disturb else "calm")
    workdir.mkdir()
    server = RedisServer(workdir / "redis", appendfsync="everysec")
    server.start()
    env = worker_env(server.url, 1, LOG_LEVEL="INFO")
    logs = [workdir / "w0.log", workdir / "w1.log"]
    procs = [start_worker(env, f"w{i}", log) for i, log in enumerate(logs)]
    wait_for_workers(server.url, procs, logs, names=["w0", "w1"])
    out = workdir / "out.jsonl"
    started = time.monotonic()
    prod = producer(env, src, out)
    conn = Redis.from_url(server.url, socket_timeout=2)
    jobs_total = (n + 255) // 256
    events: list[str] = []
    reruns = 0
    if disturb:
        while finished(conn) < jobs_total * 0.25:
            time.sleep(0.02)
        victim = procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        events.append(f"SIGKILL worker w0 at {time.monotonic() - started:.1f} s")
        logs.append(workdir / "w2.log")
        procs[0] = start_worker(env, "w2", logs[-1])
        while finished(conn) < jobs_total * 0.6:
            time.sleep(0.02)
        server.kill()
        events.append(f"SIGKILL redis-server at {time.monotonic() - started:.1f} s")
        time.sleep(1.0)
        server.start()
        events.append(f"redis-server back at {time.monotonic() - started:.1f} s")
    output = prod.communicate()[0].decode(errors="replace")
    while prod.returncode != 0 and reruns < 3:
        reruns += 1
        events.append(f"producer exited {prod.returncode}; re-run #{reruns}")
        prod = producer(env, src, out)
        output = prod.communicate()[0].decode(errors="replace")
    elapsed = time.monotonic() - started
    stop_processes(procs)
    server.stop()
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    ids = [r["id"] for r in rows]
    done = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if '"job_done"' in line:
                done.append(json.loads(line)["job_id"])
    twice = sum(c - 1 for c in collections.Counter(done).values() if c > 1)
    return {
        "seconds": elapsed,
        "lines": len(rows),
        "missing": len(set(map(str, range(n))) - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "in_order": [r["line"] for r in rows] == list(range(1, n + 1)),
        "errors": sum(1 for r in rows if r.get("error")),
        "jobs_run_twice": twice,
        "events": events,
        "producer_tail": output[-300:] if prod.returncode else "",
    }


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    parser.add_argument("--n", type=int, default=25_000)
    args = parser.parse_args()
    texts = [r.text for r in read_reviews(args.data, split="test")][: args.n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    src = tmp / "reviews.jsonl"
    src.write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
    )
    calm = run(src, len(texts), tmp, disturb=False)
    faults = run(src, len(texts), tmp, disturb=True)
    print(f"\n{len(texts)} IMDB test reviews, 2 workers, redis with AOF; file -> output file")
    print(f"{'':<24} {'undisturbed':>12} {'with faults':>12}")
    for key in (
        "seconds",
        "lines",
        "missing",
        "duplicated",
        "in_order",
        "errors",
        "jobs_run_twice",
    ):
        a, b = calm[key], faults[key]
        fa = f"{a:.1f}" if isinstance(a, float) else str(a)
        fb = f"{b:.1f}" if isinstance(b, float) else str(b)
        print(f"{key:<24} {fa:>12} {fb:>12}")
    for event in faults["events"]:  # type: ignore[attr-defined]
        print(f"  - {event}")
    ok = (
        faults["lines"] == len(texts)
        and faults["missing"] == 0
        and faults["duplicated"] == 0
        and faults["errors"] == 0
    )
    print("PASS" if ok else f"FAIL {faults['producer_tail']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
