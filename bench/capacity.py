"""Interactive capacity of one worker: one-review jobs vs bulk jobs, and open-loop load.

    python bench/capacity.py [--n 1000] [--runs 3] [--rates 70,140,280,350] [--seconds 10]
                             [--batch-jobs 1,256] [--api-replicas 1]

Measured the way serving systems measure it (issue 25), against a real redis-server and one
``sentiment-worker`` process with the served model, in one run:

(1) **Per-job overhead.** The same ``--n`` short reviews (the first sentence of IMDB test
    reviews), all waiting on the interactive queue at once, as one-review jobs and as
    256-review jobs; the time from the first enqueue to the last result, median of ``--runs``
    (runs alternate, so both see the same machine).  The ratio of the two rates is the share of
    the model's capacity that a chat or API load gets.  Then what batching adds to a job that
    waits alone: one ``take_more`` on an empty queue (median and p99 over 2,000 calls).
(2) **Open-loop load** of single reviews at rising rates, each for ``--seconds``: the bot's path
    (``shared.aqueue``: enqueue, then XREAD on the result stream, as ``sentiment-bot`` does) and
    the HTTP API (``POST /v1/classify`` with one review, through ``sentiment-api``).  Requests
    are sent on a fixed schedule whatever the answers do (open loop: a slow server cannot slow
    the client down and hide its own latency).  For each rate: achieved answers/s, p50 and p99
    latency, errors and timeouts; and the highest rate whose p99 stays <= 300 ms.

Both parts run once per ``--batch-jobs`` setting of the worker (``WORKER_BATCH_JOBS``; 1 is
no dynamic batching, as before it existed), each on a fresh Redis, and the figures are printed
side by side.  Every text is made unique (a counter), so no job is answered from an earlier one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.infra import on_schedule
from bench.throughput import forget_jobs
from shared.announcements import SERVED_MODEL_KEY
from shared.config import Settings
from shared.datasets import read_reviews
from shared.local import RedisServer, free_port, start_api, worker_env, workers
from shared.queues import QUEUE_INTERACTIVE, collect, connect, enqueue_payloads, get_queue
from shared.schema import make_payload

#: p99 bar of the open-loop load (issue 25).
P99_BAR_MS = 300.0
#: How long one request may wait before it counts as a timeout.
REQUEST_TIMEOUT_S = 5.0
BULK_CHUNK = 256


def short_reviews(data: Path, n: int) -> list[str]:
    """The first sentence (at most 200 characters) of the first ``n`` test reviews."""
    out = []
    for review in read_reviews(data, split="test"):
        text = review.text.replace("<br />", " ")
        first = text.split(". ")[0].strip()[:200]
        if len(first.split()) >= 3:
            out.append(first)
        if len(out) == n:
            break
    return out


def settle(url: str, patience_s: float = 120.0) -> None:
    """After an overloaded rate: drop the backlog nobody waits for any more, and let the worker
    finish what it holds, so the next rate starts from an idle worker."""
    conn = connect(url)
    conn.delete(f"rq:queue:{QUEUE_INTERACTIVE}")
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        held = sum(conn.llen(k) for k in conn.scan_iter("sentiment:processing:*"))
        if held == 0:
            break
        time.sleep(0.2)
    time.sleep(0.5)


def lone_job_delay(url: str, n: int = 2000) -> tuple[float, float]:
    """What batching adds to a job that waits alone: one ``take_more`` on an empty queue (the
    worker never waits for more jobs).  Median and p99 in ms over ``n`` calls."""
    from shared import reliable

    conn = connect(url)
    key = f"rq:queue:{QUEUE_INTERACTIVE}-lone"
    times = []
    for _ in range(n):
        t = time.perf_counter()
        reliable.take_more(conn, "bench-lone", key, 31)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def drain(url: str, texts: list[str], per_job: int, tag: str) -> float:
    """Seconds from the first enqueue to the last result for ``texts`` in jobs of ``per_job``."""
    forget_jobs(url)
    conn = connect(url)
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    raw: Any = conn.hget(SERVED_MODEL_KEY, "model_version")
    version = raw.decode() if raw else ""
    payloads = [
        make_payload(
            [
                (f"{tag}{i + j}", f"{t} ({tag}{i + j})")
                for j, t in enumerate(texts[i : i + per_job])
            ],
            model_version=version,
        )
        for i in range(0, len(texts), per_job)
    ]
    started = time.perf_counter()
    ids = enqueue_payloads(queue, payloads)
    outcomes = collect(conn, ids, timeout=600, poll=0.002)
    elapsed = time.perf_counter() - started
    missing = [i for i, o in outcomes.items() if o.result is None]
    if missing:
        raise RuntimeError(f"{len(missing)} jobs got no result")
    return elapsed


async def open_loop(send: Any, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``seconds`` on a fixed schedule; latencies."""
    latencies: list[float] = []
    errors = timeouts = 0
    count = max(1, int(rate * seconds))

    async def one(i: int) -> None:
        nonlocal errors, timeouts
        t = time.perf_counter()
        try:
            ok = await asyncio.wait_for(send(f"{tag}{i}"), REQUEST_TIMEOUT_S)
        except TimeoutError:
            timeouts += 1
            return
        except Exception:
            errors += 1
            return
        if ok:
            latencies.append(time.perf_counter() - t)
        else:
            errors += 1

    wall = await on_schedule(one, rate, count)
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "rate": rate,
        "achieved": len(latencies) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
        "timeouts": timeouts,
    }


async def bot_path(url: str, texts: list[str], rates: list[float], seconds: float) -> list[dict]:
    from shared.aqueue import AsyncQueueClient

    client = AsyncQueueClient(url)
    rows = []
    try:
        for rate in rates:

            async def send(tag: str) -> bool:
                text = f"{texts[zlib.crc32(tag.encode()) % len(texts)]} ({tag})"
                ticket = await client.submit(tag, text, 10)
                outcome = await client.wait(ticket.job_id, REQUEST_TIMEOUT_S)
                return outcome is not None and outcome.result is not None

            rows.append(await open_loop(send, rate, seconds, f"bot{rate:g}-"))
            settle(url)
    finally:
        await client.close()
    return rows


async def api_path(
    ports: list[int],
    token: str,
    texts: list[str],
    rates: list[float],
    seconds: float,
    redis_url: str,
):
    """The load through ``POST /v1/classify``.  The client is aiohttp: on these 2 cores the
    load generator shares the CPU with the API, the worker and Redis, and httpx spent about
    3 ms of CPU a request (aiohttp about a third of that), CPU the service under test lost."""
    import aiohttp

    rows = []
    connector = aiohttp.TCPConnector(limit=500, limit_per_host=500)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S + 5)
    headers = {"Authorization": f"Bearer {token}"}
    urls = [f"http://127.0.0.1:{port}/v1/classify" for port in ports]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:
        for rate in rates:

            async def send(tag: str) -> bool:
                key = zlib.crc32(tag.encode())
                text = f"{texts[key % len(texts)]} ({tag})"
                url = urls[key % len(urls)]  # replicas behind a load balancer, as deployed
                async with http.post(url, json={"reviews": [text]}) as answer:
                    await answer.read()
                    return answer.status == 200

            rows.append(await open_loop(send, rate, seconds, f"api{rate:g}-"))
            settle(redis_url)
    return rows


def table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    heads = ("offered/s", "answered/s", "p50 ms", "p99 ms", "errors", "timeouts")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (10, 11, 8, 8, 7, 9), strict=True)))
    for r in rows:
        print(
            f"{r['rate']:>10g} {r['achieved']:>11.1f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
            f"{r['errors']:>7} {r['timeouts']:>9}"
        )
    print(
        f"highest offered rate with p99 <= {P99_BAR_MS:.0f} ms and no errors: "
        f"{highest_ok(rows):g}/s"
    )


def measure(
    args: argparse.Namespace, texts: list[str], rates: list[float], batch_jobs: int, tmp: Path
) -> dict[str, Any]:
    """Parts (1) and (2) against a fresh Redis and one worker with ``WORKER_BATCH_JOBS``."""
    with RedisServer.temporary() as redis:
        env = worker_env(
            redis.url, args.threads, LOG_LEVEL="WARNING", WORKER_BATCH_JOBS=str(batch_jobs)
        )
        with workers(env, 1, tmp):
            drain(redis.url, texts[:50], 1, "warm")
            single, bulk = [], []
            for run in range(args.runs):
                single.append(drain(redis.url, texts, 1, f"s{run}-"))
                bulk.append(drain(redis.url, texts, BULK_CHUNK, f"b{run}-"))
            s, b = len(texts) / statistics.median(single), len(texts) / statistics.median(bulk)
            print("(1) one worker, the same reviews all waiting on the interactive queue")
            print(f"{'jobs of':>10} {'reviews/s (median)':>19} {'runs (s)':>24}")
            print(f"{'1 review':>10} {s:>19.0f} {', '.join(f'{x:.2f}' for x in single):>24}")
            print(f"{'256':>10} {b:>19.0f} {', '.join(f'{x:.2f}' for x in bulk):>24}")
            print(f"ratio one-review / 256-review jobs: {s / b:.2f}x")
            lone = lone_job_delay(redis.url)
            print(f"a lone job's added delay (one take_more): p50 {lone[0]:.3f} ms, ", end="")
            print(f"p99 {lone[1]:.3f} ms")
            bot, rows = (
                part_two(
                    redis.url,
                    env,
                    texts,
                    rates,
                    args.seconds,
                    tmp / f"api{batch_jobs}.log",
                    args.api_replicas,
                )
                if rates
                else ([], [])
            )
    return {
        "single_per_s": s,
        "bulk_per_s": b,
        "ratio": s / b,
        "lone_delay_ms": lone,
        "bot": bot,
        "api": rows,
        "bot_ok": highest_ok(bot),
        "api_ok": highest_ok(rows),
    }


def part_two(
    url: str,
    env: dict[str, str],
    texts: list[str],
    rates: list[float],
    seconds: float,
    log: Path,
    replicas: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open-loop load through the bot's path, then through ``sentiment-api`` (``replicas``
    processes, requests spread over them as a load balancer would)."""
    bot = asyncio.run(bot_path(url, texts, rates, seconds))
    table("(2a) open loop, the bot's path (enqueue + XREAD), one review a request", bot)
    token = "capacity-bench-token-0123456789"
    api_env = {
        **env,
        "API_TOKENS": f"bench={token}",
        "FEEDBACK_SALT": "capacity-bench-salt-0123456789",
        "API_RATE_PER_MINUTE": "1000000",
    }
    ports = [free_port() for _ in range(replicas)]
    apis = [start_api(api_env, ["--port", str(port)], log) for port in ports]
    try:
        rows = asyncio.run(api_path(ports, token, texts, rates, seconds, url))
    finally:
        for api in apis:
            api.terminate()
        for api in apis:
            api.wait(30)
    table(
        f"(2b) open loop, the HTTP API (POST /v1/classify) on {replicas} process(es), "
        "one review a request",
        rows,
    )
    return bot, rows


def highest_ok(rows: list[dict[str, Any]]) -> float:
    good = [r["rate"] for r in rows if r["p99"] <= P99_BAR_MS and not r["errors"] + r["timeouts"]]
    return max(good, default=0.0)


def main() -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    p.add_argument("--n", type=int, default=1000, help="short reviews for part (1)")
    p.add_argument("--runs", type=int, default=3, help="repeats of part (1) (median shown)")
    p.add_argument(
        "--rates", default="70,140,280,350", help="offered requests/s for part (2); '' skips it"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow threads of the worker")
    p.add_argument(
        "--api-replicas",
        type=int,
        default=1,
        help="sentiment-api processes for part (2b) (deploy/k8s runs 2 replicas)",
    )
    p.add_argument(
        "--batch-jobs", default="1,256", help="WORKER_BATCH_JOBS settings compared (1: off)"
    )
    args = p.parse_args()
    texts = short_reviews(args.data, args.n)
    rates = [float(r) for r in args.rates.split(",") if r]
    tmp = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    print(
        f"{len(texts)} short reviews, "
        f"mean {statistics.mean(len(t.split()) for t in texts):.1f} words"
    )
    report: dict[str, Any] = {}
    for batch_jobs in [int(b) for b in args.batch_jobs.split(",")]:
        print(
            f"\n=== WORKER_BATCH_JOBS={batch_jobs}" + (" (batching off)" if batch_jobs == 1 else "")
        )
        report[str(batch_jobs)] = measure(args, texts, rates, batch_jobs, tmp)
    settings_run = list(report)
    print("\nside by side (WORKER_BATCH_JOBS: " + ", ".join(settings_run) + ")")
    print(
        "one-review jobs, reviews/s: "
        + ", ".join(f"{report[k]['single_per_s']:.0f}" for k in settings_run)
    )
    print(
        "256-review jobs, reviews/s: "
        + ", ".join(f"{report[k]['bulk_per_s']:.0f}" for k in settings_run)
    )
    print(
        "ratio one-review / 256: " + ", ".join(f"{report[k]['ratio']:.2f}x" for k in settings_run)
    )
    for path in ("bot", "api"):
        print(
            f"{path}: highest rate with p99 <= 300 ms: "
            + ", ".join(f"{report[k][path + '_ok']:g}/s" for k in settings_run)
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
