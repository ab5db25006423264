"""What the benchmarks (and tests) share beyond ``shared.local``: options, a local S3 server."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.config import Settings
from shared.local import free_port, stop_processes

#: moto's standalone S3 server, from the dev install (``moto[server]``).
MOTO_SERVER = Path(sys.executable).with_name("moto_server")


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
