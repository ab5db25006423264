"""Hot reload under load: how soon after a publish does every worker serve the new version?

    python bench/reload.py [--publishes 3] [--workers 2]
    python bench/reload.py --store s3://bench/models   # workers on an S3-compatible store
    python bench/reload.py --rollbacks 2               # then roll back twice (sentiment-models)

Copies the served model store to a temporary folder, starts a private redis-server and worker
processes on it, and keeps a steady stream of single-review jobs flowing (``--rate`` per second)
while it publishes new versions (copies of LATEST) a few seconds apart.  For each publish and
each worker it reports the delay from the atomic LATEST switch to that worker's first job
answered by the new version, and it counts failed jobs and jobs answered by a version other
than the one current when they finished.  Target (issue 3): <= 2 s after publish, 0 failed jobs.

With ``--store s3://bucket/prefix`` every worker has its own empty local cache and follows the
store's LATEST (``shared.remote``); each publish is a local publish plus the upload, and the
delay counts from the moment the pointer moved.  The store is ``S3_ENDPOINT_URL`` (MinIO, AWS)
or, when that is unset, a moto S3 server started on loopback for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from contextlib import ExitStack

from bench.infra import moto_s3
from shared.config import Settings
from shared.local import RedisServer, start_worker, stop_processes, wait_for_workers, worker_env
from shared.queues import QUEUE_INTERACTIVE, collect, connect, enqueue_payloads, get_queue
from shared.schema import make_payload
from shared.store import ModelStore


def load(url: str, rate: float, stop: threading.Event, outcomes: list[dict[str, Any]]) -> None:
    conn = connect(url)
    queue = get_queue(QUEUE_INTERACTIVE, conn)
    i = 0
    while not stop.is_set():
        payload = make_payload([("r", f"A gripping, well acted thriller, take {i}.")], top_words=3)
        (job_id,) = enqueue_payloads(queue, [payload])
        outcome = collect(conn, [job_id], timeout=30, poll=0.002)[job_id]
        outcomes.append(
            {
                "t": time.time(),
                "error": outcome.error,
                "version": outcome.result["model_version"] if outcome.result else None,
            }
        )
        i += 1
        time.sleep(1 / rate)


def copy_latest(store: ModelStore) -> Any:
    source = store.resolve("LATEST")

    def write(folder: Path) -> dict[str, Any]:
        for f in source.path.iterdir():
            if f.name != "manifest.json":
                shutil.copy(f, folder / f.name)
        skip = ("files", "version", "created")
        return {k: v for k, v in source.manifest.items() if k not in skip}

    return write


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs per second")
    parser.add_argument("--gap", type=float, default=4.0, help="seconds between publishes")
    parser.add_argument("--store", help="s3://bucket/prefix: workers follow an S3-compatible store")
    parser.add_argument(
        "--rollbacks", type=int, default=0, help="then roll LATEST back this many times"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    shutil.copytree(settings.model_dir / settings.model_name, tmp / "models" / settings.model_name)
    store = ModelStore(tmp / "models", settings.model_name)
    logdir = tmp / "logs"
    logdir.mkdir()
    outcomes: list[dict[str, Any]] = []
    publishes: list[tuple[float, str]] = []
    with ExitStack() as stack:
        url = stack.enter_context(RedisServer.temporary()).url
        envs = [worker_env(url, 1, store.root, store.name, LOG_LEVEL="INFO")] * args.workers
        remote = None
        if args.store:
            from shared.remote import RemoteStore

            s3_env = {}
            if not os.environ.get("S3_ENDPOINT_URL"):
                bucket = args.store.removeprefix("s3://").split("/")[0]
                s3_env = stack.enter_context(moto_s3((bucket,)))
                os.environ.update(s3_env)
                print(f"S3 store: moto server at {s3_env['S3_ENDPOINT_URL']}")
            remote_url = args.store
            remote = RemoteStore(remote_url, store.name)
            remote.upload(store.resolve("LATEST"))
            envs = [
                {
                    **env,
                    **s3_env,
                    "MODEL_DIR": str(tmp / f"cache{i}"),
                    "MODEL_STORE_URL": args.store,
                }
                for i, env in enumerate(envs)
            ]
        names = [f"reload-{i}" for i in range(args.workers)]
        logs = [logdir / f"worker{i}.log" for i in range(args.workers)]
        procs = [start_worker(e, n, lg) for e, n, lg in zip(envs, names, logs, strict=True)]
        try:
            wait_for_workers(url, procs, logs, names=names)
            stop = threading.Event()
            thread = threading.Thread(target=load, args=(url, args.rate, stop, outcomes))
            thread.start()
            time.sleep(args.gap)
            for _ in range(args.publishes):
                version = store.publish(copy_latest(store), set_latest=remote is None)
                if remote is not None:
                    remote.upload(version)  # files, manifest, then the pointer
                publishes.append((time.time(), version.model_version))
                time.sleep(args.gap)
            for _ in range(args.rollbacks):
                target = store.rollback()  # what `sentiment-models rollback` does
                if remote is not None:
                    remote.set_latest(target)
                publishes.append((time.time(), f"{store.name}/{target} (rollback)"))
                time.sleep(args.gap)
            stop.set()
            thread.join()
        finally:
            stop_processes(procs)
        conn = connect(url)
        failed = sum(conn.zcard(f"rq:registry:failed:{q}") for q in ("sentiment-interactive",))

    served: dict[str, list[tuple[float, str]]] = {}
    reload_ms: list[float] = []
    for log in logdir.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "job_done":
                ts = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
                served.setdefault(event["worker"], []).append((ts, event["model_version"]))
            if event.get("event") == "model_reloaded":
                reload_ms.append(event["load_ms"])
    names = sorted(served)
    delays = []
    where = f"store {args.store}, one local cache per worker" if args.store else "local store"
    print(
        f"{args.workers} workers ({where}), {args.rate:.0f} single-review jobs/s, "
        f"{len(outcomes)} jobs answered"
    )
    print(f"{'publish':<24} " + " ".join(f"{n[:18]:>20}" for n in names))
    for t_pub, published in publishes:
        row = []
        wanted = published.split(" ")[0]
        for name in names:
            after = [ts for ts, v in served[name] if v == wanted and ts >= t_pub]
            delay = (min(after) - t_pub) if after else float("nan")
            delays.append(delay)
            row.append(f"{delay:>19.3f}s")
        print(f"{published:<24} " + " ".join(row))
    errors = sum(1 for o in outcomes if o["error"])
    print(
        f"\npublish -> worker serves it: median {statistics.median(delays):.3f} s, "
        f"max {max(delays):.3f} s (target <= 2 s)"
    )
    print(
        f"LATEST noticed -> swapped in (load, checks and warm-up run in the background): "
        f"median {statistics.median(reload_ms):.0f} ms over {len(reload_ms)} reloads"
    )
    print(f"failed jobs: {failed} in RQ's failed registry, {errors} errors in results (target 0)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
