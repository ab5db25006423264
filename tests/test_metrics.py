"""Prometheus metrics, scraped from the real processes: worker, exporter, bot and (pushed by
the producer) a real Pushgateway; and the ops configuration checked by promtool.

The counters must equal what ran: jobs the producer enqueued = jobs the worker finished = the
finished registry the exporter reports; reviews answered = valid input lines; output lines by
outcome = the file written.  The Grafana dashboard and the alert rules may only name series
that our processes really export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.fake_telegram import TOKEN, FakeTelegramServer
from shared.local import (
    RedisServer,
    free_port,
    start,
    start_producer,
    start_worker,
    stop_processes,
    wait_for_workers,
)
from shared.queues import (
    QUEUE_BULK,
    QUEUE_INTERACTIVE,
    collect,
    connect,
    enqueue_payloads,
    get_queue,
)
from shared.schema import make_payload
from shared.store import ModelStore
from tests.conftest import REPO, copy_store, env_for, publish_copy

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
PROMTOOL = shutil.which("promtool")
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sentiment.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float = 5) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (the last error otherwise)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
            if got:
                return got
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.2)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway not installed (.ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen(
        # Debian's build persists to /var/lib by default: this one keeps metrics in memory.
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "pushgateway.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: scrape(url + "/metrics") is not None)
        yield url
    finally:
        stop_processes([proc], timeout=10)


@pytest.mark.redis_server
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_worker_exporter_and_pushed_producer_counters_equal_the_jobs_run(
    tiny_store: ModelStore, tmp_path: Path, pushgateway: str
) -> None:
    store = copy_store(tiny_store, tmp_path / "models")
    lines = [
        f"{'A superb, wonderful film' if i % 3 else 'Awful and boring'} {i}." for i in range(40)
    ]
    lines[5] = lines[17] = ""  # two invalid lines: errors in the output, never sent to workers
    src = tmp_path / "reviews.txt"
    src.write_text("\n".join(lines) + "\n")
    with RedisServer.temporary() as server:
        worker_port, exporter_port = free_port(), free_port()
        env = env_for(server.url, store)
        log = tmp_path / "worker.log"
        worker = start_worker({**env, "METRICS_PORT": str(worker_port)}, "metrics-w", log)
        exporter = start(
            "shared.commands.exporter", ["--port", str(exporter_port)], env, tmp_path / "exp.log"
        )
        procs = [worker, exporter]
        try:
            wait_for_workers(server.url, [worker], [log])
            worker_url = f"http://127.0.0.1:{worker_port}/metrics"
            exporter_url = f"http://127.0.0.1:{exporter_port}/metrics"
            before = scrape(worker_url)
            assert value(before, "sentiment_worker_model_info", model_version="tiny/v0001") == 1
            assert value(before, "sentiment_worker_jobs_total") == 0
            assert value(before, "sentiment_worker_heartbeat_age_seconds") >= 0

            producer = start_producer(
                {**env, "PUSHGATEWAY_URL": pushgateway},
                src,
                tmp_path / "out.jsonl",
                "--chunk-size",
                "4",
            )
            out, _ = producer.communicate(timeout=180)
            assert producer.returncode == 0, out.decode()[-2000:]
            rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
            assert len(rows) == 40

            pushed = scrape(pushgateway + "/metrics")
            jobs = value(pushed, "sentiment_producer_jobs_enqueued_total", queue=QUEUE_BULK)
            assert jobs >= 10  # 38 valid reviews, at most 4 per job
            assert value(pushed, "sentiment_producer_reviews_enqueued_total") == 38
            for outcome in ("positive", "negative", "error"):
                expected = sum(
                    1 for r in rows if ("error" if r.get("error") else r["label"]) == outcome
                )
                got = value(pushed, "sentiment_producer_rows_collected_total", outcome=outcome)
                assert got == expected, outcome
            assert value(pushed, "sentiment_producer_last_success_unixtime") > 0

            def worker_caught_up() -> Samples | None:
                s = scrape(worker_url)
                done = value(s, "sentiment_worker_jobs_total", outcome="finished")
                return s if done == jobs else None

            after = eventually(worker_caught_up)
            assert value(after, "sentiment_worker_jobs_total", queue=QUEUE_BULK) == jobs
            assert value(after, "sentiment_worker_job_seconds_count") == jobs
            assert value(after, "sentiment_worker_review_seconds_count") == 38
            assert value(after, "sentiment_worker_queue_wait_seconds_count") == jobs
            labelled = value(after, "sentiment_worker_reviews_total")
            assert labelled == 38 == sum(1 for r in rows if r.get("label"))
            assert value(after, "sentiment_worker_reviews_total", outcome="positive") == sum(
                1 for r in rows if r.get("label") == "positive"
            )

            exported = scrape(exporter_url)
            assert value(exported, "sentiment_redis_up") == 1
            assert value(exported, "sentiment_workers") == 1
            assert value(exported, "sentiment_queue_depth", queue=QUEUE_BULK) == 0
            finished = value(
                exported, "sentiment_queue_registry_jobs", queue=QUEUE_BULK, registry="finished"
            )
            assert finished == jobs

            # A new version is counted as a reload; a broken one as a refusal.
            publish_copy(store)
            conn = connect(server.url)

            asked = iter(range(1000))

            def swapped() -> Samples | None:
                # The worker swaps versions between jobs: give it one (a new one each time:
                # job ids are derived from the payload).
                payload = make_payload([("r", f"A fine film, take {next(asked)}.")])
                ids = enqueue_payloads(get_queue(QUEUE_INTERACTIVE, conn), [payload])
                collect(conn, ids, timeout=30)
                s = scrape(worker_url)
                return (
                    s
                    if value(s, "sentiment_worker_model_info", model_version="tiny/v0002")
                    else None
                )

            reloaded = eventually(swapped)
            assert value(reloaded, "sentiment_worker_model_reloads_total") == 1
            assert value(reloaded, "sentiment_worker_model_info", model_version="tiny/v0001") == 0

            def corrupt(folder: Path, manifest: dict[str, Any]) -> None:
                (folder / "model.keras").write_bytes(b"not a model")

            publish_copy(store, edit=corrupt)
            refused = eventually(
                lambda: (
                    (s := scrape(worker_url))
                    and value(s, "sentiment_worker_model_refusals_total") == 1
                    and s
                )
            )
            assert value(refused, "sentiment_worker_model_info", model_version="tiny/v0002") == 1

            # Redis away: the exporter still answers, and says so.
            server.kill()
            down = scrape(exporter_url, timeout=60)
            assert value(down, "sentiment_redis_up") == 0
            assert value(down, "sentiment_queue_depth") == 0  # no stale depths
        finally:
            stop_processes(procs, timeout=15)


@pytest.mark.redis_server
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_the_bot_counts_updates_answers_and_rate_limits(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    with RedisServer.temporary() as server, FakeTelegramServer() as fake:
        port = free_port()
        env = {
            **env_for(server.url, tiny_store),
            "NO_PROXY": "127.0.0.1,localhost",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": fake.url,
            "BOT_RATE_PER_MINUTE": "2",
            "METRICS_PORT": str(port),
        }
        log = tmp_path / "worker.log"
        worker_env = {k: v for k, v in env.items() if k != "METRICS_PORT"}
        worker = start_worker(worker_env, "bot-metrics", log)
        bot = start("bot", [], env, tmp_path / "bot.log")
        try:
            wait_for_workers(server.url, [worker], [log])
            fake.wait_for(lambda: fake.calls_to("deleteWebhook"), timeout=60)
            asked = []
            for text in ("A superb, wonderful film.", "Awful and boring."):
                message = fake.message(11, text)
                fake.push("message", message)
                asked.append(message["message_id"])
                fake.wait_for(
                    lambda m=message: [
                        r for r in fake.replies_to(m["message_id"]) if "Analysing" not in r["text"]
                    ],
                    timeout=60,
                )
            third = fake.message(11, "One more, over the limit.")
            fake.push("message", third)
            fake.wait_for(lambda: fake.replies_to(third["message_id"]), timeout=30)
            fake.send_sticker(11)
            url = f"http://127.0.0.1:{port}/metrics"
            s = eventually(
                lambda: (
                    (s := scrape(url))
                    and value(s, "sentiment_bot_updates_total", kind="not_text") == 1
                    and s
                )
            )
            assert value(s, "sentiment_bot_updates_total", kind="message") == 3
            assert value(s, "sentiment_bot_answers_total", outcome="positive") == 1
            assert value(s, "sentiment_bot_answers_total", outcome="negative") == 1
            assert value(s, "sentiment_bot_answers_total", outcome="rate_limited") == 1
            assert value(s, "sentiment_bot_rate_limited_total", reason="rate") == 1
            assert value(s, "sentiment_bot_answer_seconds_count") == 2
        finally:
            stop_processes([bot, worker], timeout=15)
    assert TOKEN not in (tmp_path / "bot.log").read_text()


# -- the ops configuration -----------------------------------------------------------------
def _exported_names() -> set[str]:
    """Every series name our processes export, from their real registries."""
    import fakeredis
    from prometheus_client import REGISTRY, CollectorRegistry

    import bot.metrics  # noqa: F401  (registers the bot's metrics)
    import worker.metrics  # noqa: F401  (registers the worker's metrics)
    from api.metrics import REGISTRY as API
    from shared.metrics import PRODUCER, QueueCollector
    from shared.queues import WORKER_QUEUES

    queues = CollectorRegistry()
    queues.register(QueueCollector(fakeredis.FakeRedis(), WORKER_QUEUES))
    names: set[str] = set()
    for registry in (REGISTRY, API, PRODUCER, queues):
        for family in registry.collect():
            names.add(family.name)
            names |= {s.name for s in family.samples}
            if family.type in ("histogram", "counter", "summary"):
                names |= {
                    f"{family.name}_{suffix}" for suffix in ("total", "bucket", "count", "sum")
                }
    return names


def _metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (ours all start with ``sentiment_``)."""
    return set(re.findall(r"\b(sentiment_[a-z_]+)\b", expr))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_dashboard_and_the_rules_only_use_series_we_export() -> None:
    exported = _exported_names()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = _dashboard_exprs() + [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used, "no series found in the dashboard"
    assert used <= exported, f"not exported by any process: {sorted(used - exported)}"
    # Recording rules the dashboard reads exist.
    for expr in _dashboard_exprs():
        for name in re.findall(r"\b(sentiment:[a-z0-9_:]+)\b", expr):
            assert name in recorded, name
    # What the issue asks to see: queue depth, reviews/s, p50/p99 latency, errors, versions.
    text = " ".join(_dashboard_exprs())
    for needed in (
        "sentiment_queue_depth",
        "sentiment:reviews_per_second",
        "sentiment:job_seconds:p50",
        "sentiment:job_seconds:p99",
        "sentiment_worker_errors_total",
        "sentiment_worker_model_info",
    ):
        assert needed in text, needed
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioned["datasources"][0]["uid"] == "prometheus"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (.ci/run installs it)")
def test_promtool_accepts_the_config_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(PROMTOOL), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # Every dashboard query parsed by Prometheus's own PromQL parser (as recording rules).
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e}
                    for i, e in enumerate(_dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # ... and a broken query is caught, so the check can fail.
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "x",
                        "rules": [
                            {
                                "record": "x:y",
                                "expr": "sum(rate(sentiment_worker_reviews_total[1m])",
                            }
                        ],
                    }
                ]
            }
        )
    )
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert done.returncode != 0
