"""HTTP API latency and batch throughput, side by side with the bot's path and in-process.

    python bench/api_latency.py [--rates 50,200] [--seconds 20] [--batch-n 25000]

Real redis-server, 2 worker processes (1 TensorFlow thread each) and the real ``sentiment-api``
process.  Single-review requests are sent open-loop (a request every 1/rate s, however slow the
answers: concurrent clients) for ``seconds`` at each rate, each with a distinct IMDB test review
(cut to 4,096 characters, like a Telegram message), through:

(a) the API: ``POST /v1/classify`` with a bearer token (HTTP, auth, JSON, queue, worker);
(b) the bot's path: ``AsyncQueueClient.submit`` + ``wait`` in this process (queue, worker);
(c) in-process: ``explain_reviews`` on one review at a time, no queue (sequential).

Then the batch endpoint against ``sentiment-enqueue`` on the same ``batch-n`` reviews file:
upload + streamed JSONL download vs file -> output file (jobs forgotten before each run, so
neither reuses the other's results).  Targets (issue 12): p50 <= 30 ms and p99 <= 100 ms at
50 req/s, zero errors; batch endpoint >= 0.85 x sentiment-enqueue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.infra import model_arguments, on_schedule
from bench.throughput import forget_jobs
from shared.config import Settings
from shared.datasets import read_reviews
from shared.local import (
    RedisServer,
    free_port,
    start_api,
    start_producer,
    stop_processes,
    worker_env,
    workers,
)

TOKEN = "bench-token-0123456789abcdef"


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 99) * 1000)


async def open_loop(send: Any, texts: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """Fire ``send(text)`` every 1/rate s for ``seconds``; latencies of the successes, errors."""
    n = int(rate * seconds)
    times: list[float] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        try:
            await send(f"{texts[i % len(texts)]} (#{i})")
            times.append(time.perf_counter() - started)
        except Exception as exc:  # counted, shown
            errors.append(f"{type(exc).__name__}: {exc}"[:200])

    sent_rate = n / await on_schedule(one, rate, n)
    return {"n": n, "times": times, "errors": errors, "achieved": sent_rate}


async def through_api(url: str, texts: list[str], rate: float, seconds: float) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def send(text: str) -> None:
            answer = await http.post("/v1/classify", json={"review": text}, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:100]}")
            if answer.json()["results"][0].get("error"):
                raise RuntimeError(answer.json()["results"][0]["error"])

        return await open_loop(send, texts, rate, seconds)


async def through_queue(redis_url: str, texts: list[str], rate: float, seconds: float) -> Any:
    from shared.aqueue import AsyncQueueClient

    client = AsyncQueueClient(redis_url, max_connections=2000)
    try:

        async def send(text: str) -> None:
            ticket = await client.submit("b", text, 10)
            outcome = await client.wait(ticket.job_id, 60)
            if outcome is None or outcome.result is None:
                raise RuntimeError("no answer" if outcome is None else outcome.error)

        return await open_loop(send, texts, rate, seconds)
    finally:
        await client.close()


def in_process(texts: list[str], store: Any, n: int = 300) -> list[float]:
    from worker.model.served import explain_reviews, load_served

    served = load_served(store)
    times = []
    for i in range(n):
        t = time.perf_counter()
        explain_reviews(served, [{"id": "x", "text": texts[i % len(texts)]}], 10)
        times.append(time.perf_counter() - t)
    return times


def batch_api(url: str, src: Path, out: Path) -> float:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    t = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        with src.open("rb") as fh:
            created = http.post("/v1/batches", files={"file": (src.name, fh)})
        created.raise_for_status()
        results_url = created.json()["results_url"]
        with http.stream("GET", results_url) as answer, out.open("wb") as sink:
            answer.raise_for_status()
            for chunk in answer.iter_bytes():
                sink.write(chunk)
    return time.perf_counter() - t


def batch_producer(env: dict[str, str], src: Path, out: Path) -> float:
    t = time.perf_counter()
    producer = start_producer(env, src, out)
    output = producer.communicate()[0]
    if producer.returncode != 0:
        raise RuntimeError(output.decode(errors="replace")[-2000:])
    return time.perf_counter() - t


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(parser, settings)
    parser.add_argument("--rates", default="50,200", help="requests per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-n", type=int, default=25_000)
    args = parser.parse_args()
    from shared.store import ModelStore

    store = ModelStore(args.model_dir, args.model_name)
    reviews = [r.text for r in read_reviews(args.data, split="test")]
    texts = [t[:4096] for t in reviews[:5000]]
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    src = tmp / "reviews.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": str(i), "text": t}) + "\n"
            for i, t in enumerate(reviews[: args.batch_n])
        )
    )
    print("in-process, one review at a time ...", flush=True)
    inproc = in_process(texts, store)
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[tuple[str, float, dict[str, Any]]] = []
    with RedisServer.temporary() as redis:
        env = worker_env(redis.url, 1, store.root, store.name, LOG_LEVEL="WARNING")
        with workers(env, 2):
            port = free_port()
            api = start_api(
                {**env, "API_TOKENS": TOKEN, "API_RATE_PER_MINUTE": "1000000"},
                ["--port", str(port)],
                tmp / "api.log",
            )
            url = f"http://127.0.0.1:{port}"
            try:
                for rate in rates:
                    print(f"{rate:g} req/s ...", flush=True)
                    rows.append(
                        (
                            "(a) HTTP API",
                            rate,
                            asyncio.run(through_api(url, texts, rate, args.seconds)),
                        )
                    )
                    rows.append(
                        (
                            "(b) bot path (queue client)",
                            rate,
                            asyncio.run(through_queue(redis.url, texts, rate, args.seconds)),
                        )
                    )
                print("batches ...", flush=True)
                forget_jobs(redis.url)
                t_api = batch_api(url, src, tmp / "api.jsonl")
                forget_jobs(redis.url)
                t_cli = batch_producer(env, src, tmp / "cli.jsonl")
            finally:
                stop_processes([api])
    same = (tmp / "api.jsonl").read_bytes() == (tmp / "cli.jsonl").read_bytes()
    n = args.batch_n
    print(f"\nsingle-review latency, 2 workers, {args.seconds:g} s open-loop per rate (ms)")
    print(f"{'path':<30} {'req/s':>6} {'sent/s':>7} {'p50':>7} {'p99':>8} {'ok':>6} {'errors':>6}")
    for name, rate, r in rows:
        p50, p99 = percentiles(r["times"]) if r["times"] else (float("nan"), float("nan"))
        print(
            f"{name:<30} {rate:>6g} {r['achieved']:>7.1f} {p50:>7.1f} {p99:>8.1f} "
            f"{len(r['times']):>6} {len(r['errors']):>6}"
        )
    p50, p99 = percentiles(inproc)
    print(
        f"{'(c) in-process, sequential':<30} {'-':>6} {'-':>7} {p50:>7.1f} {p99:>8.1f} "
        f"{len(inproc):>6} {0:>6}"
    )
    for name, rate, r in rows:
        if r["errors"]:
            print(f"  {name} @ {rate:g}: first errors: {r['errors'][:3]}")
    print(f"\nbatch of {n} IMDB test reviews, file -> results, 2 workers")
    print(f"  sentiment-enqueue      {t_cli:7.1f} s  {n / t_cli:7.0f} reviews/s")
    print(
        f"  POST+GET /v1/batches   {t_api:7.1f} s  {n / t_api:7.0f} reviews/s  "
        f"({t_cli / t_api:.2f} x sentiment-enqueue)"
    )
    print(f"  identical output bytes: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
