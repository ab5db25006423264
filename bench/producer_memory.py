"""Producer memory against input size: 10k, 100k and 1M lines through the queue.

    python bench/producer_memory.py [--sizes 10000,100000,1000000] [--workers 2]

Each size is a text file of short, distinct reviews sent through ``sentiment-enqueue FILE -o
OUT`` with a real redis-server and worker processes serving the published model.  Reported per
size: the producer's peak RSS (from the kernel's accounting of that process, ``wait4``), its
wall time, the rate, Redis's peak memory, and whether the output has exactly one line per input
line.  A streaming producer's RSS stays flat as the input grows 100-fold.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from redis import Redis

from shared.local import RedisServer, start_producer, worker_env, workers

WORDS = ["great", "dull", "moving", "boring", "superb", "awful", "fine", "clumsy", "witty"]


def write_input(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            a, b = WORDS[i % len(WORDS)], WORDS[(i // len(WORDS)) % len(WORDS)]
            fh.write(f"A {a} and {b} film, number {i}.\n")


def run(env: dict[str, str], src: Path, out: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit status) of one producer run."""
    started = time.perf_counter()
    producer = start_producer(env, src, out, "--timeout", "3600")
    assert producer.stdout is not None
    for _ in iter(lambda: producer.stdout.read(1 << 16), b""):  # type: ignore[union-attr]
        pass
    _, status, usage = os.wait4(producer.pid, 0)
    producer.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, producer.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-producer-memory-"))
    rows = []
    with RedisServer.temporary() as redis:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        env = worker_env(redis.url, threads, LOG_LEVEL="WARNING")
        with workers(env, args.workers, tmp):
            for n in sizes:
                src, out = tmp / f"in{n}.txt", tmp / f"out{n}.jsonl"
                write_input(src, n)
                seconds, rss, code = run(env, src, out)
                lines = sum(1 for _ in out.open()) if out.exists() else 0
                peak = Redis.from_url(redis.url).info("memory")["used_memory_peak"] / 2**20
                rows.append((n, src.stat().st_size / 2**20, rss, seconds, code, lines, peak))
                print(f"{n} lines done", flush=True)
                src.unlink()
                out.unlink(missing_ok=True)
    print(f"\n{'lines':>9} {'input MB':>9} {'producer RSS MB':>16} {'seconds':>8} "
          f"{'reviews/s':>10} {'exit':>5} {'output lines':>13} {'redis peak MB':>14}")  # fmt: skip
    for n, mb, rss, seconds, code, lines, peak in rows:
        print(
            f"{n:>9,} {mb:>9.1f} {rss:>16.0f} {seconds:>8.1f} {n / seconds:>10,.0f} {code:>5} "
            f"{lines:>13,} {peak:>14.0f}"
        )
    flat = rows[-1][2] / rows[0][2]
    print(f"\nRSS at {rows[-1][0]:,} lines / RSS at {rows[0][0]:,} lines: {flat:.2f}x")
    ok = all(code == 0 and lines == n for n, _, _, _, code, lines, _ in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
