"""What the benchmarks (and tests) share beyond ``shared.local``: options, a local S3 server."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import Settings
from shared.local import free_port, stop_processes

#: moto's standalone S3 server, from the dev install (``moto[server]``).
MOTO_SERVER = Path(sys.executable).with_name("moto_server")


async def on_schedule(one: Callable[[int], Awaitable[None]], rate: float, count: int) -> float:
    """Start ``one(i)`` every ``1 / rate`` s, ``count`` times, whatever the earlier ones do (an
    open loop: a slow server cannot slow the client down and hide its own latency); waits for
    all of them and returns the seconds it took."""
    start = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


@contextmanager
def moto_s3(buckets: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """A real S3-compatible HTTP server on loopback (moto), with ``buckets`` created; yields the
    environment that points boto3 (and our workers) at it."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        "S3_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield env
    finally:
        stop_processes([proc], timeout=10)


def model_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The dataset and model-version options every benchmark takes."""
    parser.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir)
    parser.add_argument("--model-name", default=settings.model_name)
    parser.add_argument("--version", default="LATEST")


def reproduce_split(
    parser: argparse.ArgumentParser, settings: Settings
) -> tuple[argparse.Namespace, Any, Any, Any]:
    """Parse ``parser``'s arguments (``model_arguments`` among them) and return them with the
    published version, its TrainConfig and the Prepared data exactly as the version's training
    run had them: its seed, hence the same vocabulary and validation split, checked against the
    version's vocabulary fingerprint so validation reviews can never leak into a probe.  Exits
    with status 2 and a message on stderr when the data cannot reproduce it."""
    import json

    from shared.store import ModelStore
    from worker.training.config import TrainConfig
    from worker.training.data import prepare

    args = parser.parse_args()
    if not args.data.exists():
        parser.exit(2, f"dataset not found: {args.data}\n")
    published = ModelStore(args.model_dir, args.model_name).resolve(args.version)
    manifest = json.loads((published.path / "manifest.json").read_text())
    training = manifest["training"]
    config = TrainConfig(
        data=args.data,
        seed=int(training["seed"]),
        arch=manifest["architecture"],
        # as the version was trained: earlier versions kept IMDB's repeated evaluation texts
        evaluation_texts_out=bool(training.get("evaluation_texts_out", False)),
    )
    prepared = prepare(config, settings)
    if prepared.vocab.fingerprint != manifest["vocab"]["fingerprint"]:
        parser.exit(2, "this data does not reproduce the version's vocabulary: not comparable\n")
    if prepared.test_rows is None or prepared.y_test is None:
        parser.exit(2, "no test split in this data\n")
    return args, published, config, prepared


def accuracy(log_odds: np.ndarray, labels: np.ndarray) -> float:
    return float(((log_odds > 0) == labels).mean())


def blend(
    x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> tuple[float, float, list[float]]:
    """A logistic regression on the columns (log-odds of models) fitted on validation: its
    10-fold cross-validated validation accuracy, its test accuracy and its coefficients."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = StratifiedKFold(10, shuffle=True, random_state=seed)
    cv = float(cross_val_score(LogisticRegression(), x_val, y_val, cv=folds).mean())
    fitted = LogisticRegression().fit(x_val, y_val)
    coef = np.round(fitted.coef_.ravel(), 3).tolist()
    return cv, float(fitted.score(x_test, y_test)), coef
