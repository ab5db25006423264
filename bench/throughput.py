"""Throughput of classification with explanations: in-process vs through Redis with 1 and 2 workers.

    python bench/throughput.py [--n 25000] [--chunk-sizes 16,64,256]

(a) in-process, batched: texts -> results with top words -> JSONL file, one process.
(b) end to end from file to output file with ``sentiment-enqueue`` through a real redis-server
    and 1, then 2, worker processes (already started, model loaded; TensorFlow threads split
    between them).
Each path runs 3 times (--runs); the median is reported with the range (this machine is noisy).
Also: the chunk-size sweep behind the producer's default, p50/p99 latency of single-review
jobs on an idle worker (with and without per-sentence answers, as the bot asks them), and the
rate with per-sentence answers (``--sentences``) against without, in-process and in bulk with
2 workers (paired runs, interleaved; issue 23: >= 0.7).  Targets (issue 3): (b) with 2 workers
>= 1500 reviews/s and >= 0.85 x (a).
``--compare v0002`` (the default) also runs (a) on that version, its runs interleaved with
LATEST's so both see the same machine; the ratio is the model's cost (issue 11: >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.batches import DEFAULT_CHUNK_SIZE
from shared.config import Settings
from shared.datasets import read_reviews
from shared.local import RedisServer, start_producer, worker_env, workers
from shared.output import RowFormat
from shared.queues import QUEUE_INTERACTIVE, collect, connect, enqueue_payloads, get_queue
from shared.schema import make_payload


def in_process(
    texts: list[str],
    out: Path,
    served: Any = None,
    version: str = "LATEST",
    sentences: bool = False,
) -> tuple[float, Any]:
    """Seconds to classify and explain ``texts`` into a JSONL file in this process."""
    from shared.store import ModelStore
    from worker.model.served import explain_reviews, load_served

    if served is None:
        settings = Settings.from_env()
        served = load_served(ModelStore(settings.model_dir, settings.model_name), version)
    rows = RowFormat("jsonl")  # the lines sentiment-predict writes
    t = time.perf_counter()
    with out.open("w") as fh:
        for start in range(0, len(texts), 1024):
            stop = min(start + 1024, len(texts))
            reviews = [{"id": str(i), "text": texts[i]} for i in range(start, stop)]
            for r in explain_reviews(served, reviews, 10, sentences=sentences):
                fh.write(rows.line(r))
    return time.perf_counter() - t, served


def forget_jobs(url: str) -> None:
    """Delete jobs and results (job ids are deterministic: a rerun would reuse them)."""
    conn = connect(url)
    for pattern in ("rq:job:*", "rq:results:*", "sentiment:batch:*", "rq:finished:*"):
        keys = list(conn.scan_iter(pattern, count=1000))
        for start in range(0, len(keys), 1000):
            conn.delete(*keys[start : start + 1000])


def through_redis(
    src: Path, env: dict[str, str], chunk: int, out: Path, sentences: bool = False
) -> float:
    forget_jobs(env["REDIS_URL"])
    t = time.perf_counter()
    extra = ["--sentences"] if sentences else []
    producer = start_producer(env, src, out, "--chunk-size", str(chunk), *extra)
    output = producer.communicate()[0]
    elapsed = time.perf_counter() - t
    if producer.returncode != 0:
        raise RuntimeError(output.decode(errors="replace")[-2000:])
    assert sum(1 for _ in out.open()) == sum(1 for _ in src.open())
    return elapsed


def single_latency(redis_url: str, n: int = 200, sentences: bool = False) -> tuple[float, float]:
    """p50/p99 ms of one-review jobs, one at a time (``sentences``: as the bot asks them)."""
    conn = connect(redis_url)
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    times = []
    for i in range(n):
        text = f"An honest, moving little film number {i}. The ending drags a bit."
        payload = make_payload([("s", text)], sentences=sentences)
        t = time.perf_counter()
        (job_id,) = enqueue_payloads(queue, [payload])
        outcome = collect(conn, [job_id], timeout=10, poll=0.001)[job_id]
        times.append(time.perf_counter() - t)
        assert outcome.result is not None
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 99) * 1000)


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    parser.add_argument("--n", type=int, default=25_000)
    parser.add_argument("--chunk-sizes", default="16,64,256")
    parser.add_argument("--runs", type=int, default=3, help="repeats of each path (median shown)")
    parser.add_argument(
        "--chunk", type=int, default=DEFAULT_CHUNK_SIZE, help="reviews per job for the 1 vs 2 run"
    )
    parser.add_argument(
        "--compare", default="v0002", help="also run (a) on this version ('' to skip)"
    )
    args = parser.parse_args()
    texts = [r.text for r in read_reviews(args.data, split="test")][: args.n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    src = tmp / "reviews.jsonl"
    src.write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
    )
    n = len(texts)
    runs = args.runs
    rows: list[tuple[str, list[float]]] = []
    served, other = None, None
    a_times, c_times, s_times = [], [], []
    for _ in range(runs):
        elapsed, served = in_process(texts, tmp / "inproc.jsonl", served)
        a_times.append(elapsed)
        elapsed, served = in_process(texts, tmp / "inproc-s.jsonl", served, sentences=True)
        s_times.append(elapsed)
        if args.compare:
            elapsed, other = in_process(texts, tmp / "other.jsonl", other, args.compare)
            c_times.append(elapsed)
    assert served is not None
    rows.append((f"(a) in-process, batched, {served.model_version}", a_times))
    rows.append(("(a) in-process, with sentences", s_times))
    print(f"(a) done: {n / statistics.median(a_times):,.0f} reviews/s", flush=True)
    if args.compare:
        assert other is not None
        rows.append((f"(a) in-process, batched, {other.model_version}", c_times))
    sweep = []
    with RedisServer.temporary() as redis:
        url = redis.url
        for count, threads in ((1, 2), (2, 1)):
            env = worker_env(url, threads, LOG_LEVEL="WARNING")
            with workers(env, count):
                times, with_sentences = [], []
                for _ in range(runs):  # interleaved: both see the same machine
                    times.append(through_redis(src, env, args.chunk, tmp / f"out{count}.jsonl"))
                    if count == 2:
                        with_sentences.append(
                            through_redis(src, env, args.chunk, tmp / "outs.jsonl", True)
                        )
                name = f"(b) redis, {count} worker{'s' * (count > 1)}, chunk {args.chunk}"
                rows.append((name, times))
                if with_sentences:
                    rows.append((f"{name}, with sentences", with_sentences))
                    bulk_ratios = [a / b for a, b in zip(times, with_sentences, strict=True)]
                print(f"(b{count}) done: {n / statistics.median(times):,.0f} reviews/s", flush=True)
                if count == 2:
                    small = tmp / "sweep.jsonl"
                    small.write_text("".join(src.read_text().splitlines(keepends=True)[:5000]))
                    for chunk in (int(c) for c in args.chunk_sizes.split(",")):
                        sweep.append(
                            (chunk, 5000 / through_redis(small, env, chunk, tmp / "s.jsonl"))
                        )
                    p50, p99 = single_latency(url)
                    bot_p50, bot_p99 = single_latency(url, sentences=True)
    t_a = statistics.median(a_times)
    print(f"\n{n} IMDB test reviews, label + scores + top words + phrases, file -> output file")
    print(f"median of {runs} runs each (range in brackets)")
    print(f"{'path':<44} {'seconds':>8} {'reviews/s':>10} {'range':>15} {'vs (a)':>7}")
    for name, times in rows:
        med = statistics.median(times)
        spread = f"[{n / max(times):,.0f}-{n / min(times):,.0f}]"
        print(f"{name:<44} {med:>8.1f} {n / med:>10,.0f} {spread:>15} {t_a / med:>7.2f}")
    print(
        "\nchunk-size sweep, 2 workers, 5000 reviews: "
        + ", ".join(f"{c}/job {r:,.0f} reviews/s" for c, r in sweep)
    )
    print(
        f"single-review jobs on an idle worker (200 sequential): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        f"; two sentences answered per sentence (the bot's jobs): p50 {bot_p50:.1f} ms, "
        f"p99 {bot_p99:.1f} ms"
    )
    in_ratios = [a / s for a, s in zip(a_times, s_times, strict=True)]
    print(
        f"with sentences / without, rate ratio (issue 23: >= 0.7): in-process median "
        f"{statistics.median(in_ratios):.2f} (range {min(in_ratios):.2f}-{max(in_ratios):.2f}); "
        f"bulk through Redis, 2 workers, median {statistics.median(bulk_ratios):.2f} "
        f"(range {min(bulk_ratios):.2f}-{max(bulk_ratios):.2f})"
    )
    if c_times:
        ratios = [c / a for a, c in zip(a_times, c_times, strict=True)]
        print(
            f"(a) rate of {served.model_version} / {args.compare}: median of paired runs "
            f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
