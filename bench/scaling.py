"""Throughput against the number of worker processes: 1, 2 and 4 on this machine.

    python bench/scaling.py [--n 10000] [--runs 3] [--workers 1,2,4]

File -> output file with ``sentiment-enqueue`` through a real redis-server, as in
bench/throughput.py; each worker gets max(1, cores / workers) TensorFlow threads.  This machine
has 2 cores, so expect saturation at 2: the curve is reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.throughput import through_redis
from shared.batches import DEFAULT_CHUNK_SIZE
from shared.config import Settings
from shared.datasets import read_reviews
from shared.local import RedisServer, worker_env, workers


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    texts = [r.text for r in read_reviews(args.data, split="test")][: args.n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    src = tmp / "reviews.jsonl"
    src.write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
    )
    cores = os.cpu_count() or 1
    results = []
    with RedisServer.temporary() as redis:
        url = redis.url
        for count in (int(w) for w in args.workers.split(",")):
            env = worker_env(url, max(1, cores // count), LOG_LEVEL="WARNING")
            with workers(env, count):
                times = [
                    through_redis(src, env, DEFAULT_CHUNK_SIZE, tmp / "out.jsonl")
                    for _ in range(args.runs)
                ]
            results.append((count, times))
            print(
                f"{count} worker(s): {len(texts) / statistics.median(times):,.0f} reviews/s",
                flush=True,
            )
    base = len(texts) / statistics.median(results[0][1])
    print(f"\n{len(texts)} IMDB test reviews, file -> file with explanations; {cores} cores")
    print(f"median of {args.runs} runs (range)")
    print(f"{'workers':>7} {'TF threads':>10} {'reviews/s':>10} {'range':>15} {'vs 1':>6}")
    for count, times in results:
        rate = len(texts) / statistics.median(times)
        spread = f"[{len(texts) / max(times):,.0f}-{len(texts) / min(times):,.0f}]"
        print(
            f"{count:>7} {max(1, cores // count):>10} {rate:>10,.0f} {spread:>15}"
            f" {rate / base:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
