"""Helpers for the benchmarks: a private redis-server and worker processes on this machine."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from shared.config import Settings

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    conn = Redis(port=port)
    for _ in range(200):
        try:
            conn.ping()
            break
        except Exception:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class PersistentRedis:
    """redis-server with append-only persistence on a fixed port and folder: restartable in place.

    ``fsync`` is the AOF policy: "always" loses nothing on SIGKILL, "everysec" (compose's
    choice) up to a second.
    """

    def __init__(self, workdir: Path, fsync: str = "always") -> None:
        self.port, self.dir, self.fsync = free_port(), workdir, fsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", self.fsync, "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(400):
            try:
                if Redis.from_url(self.url).ping():
                    return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: no goodbye, only what the AOF holds survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def worker_env(redis_url: str, threads: int, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TF_THREADS": str(threads),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
    }
    env.update(extra)
    return env


@contextmanager
def workers(
    env: dict[str, str], n: int, logdir: Path | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` worker processes; returns once each has loaded the model and registered."""
    logdir = logdir or Path(tempfile.mkdtemp(prefix="bench-workers-"))
    procs, logs = [], []
    for i in range(n):
        log = logdir / f"worker{i}.log"
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "worker", "--log-level", "INFO"],
                env=env,
                cwd=REPO,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all(log.exists() and b"worker_started" in log.read_bytes() for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers failed to start; see {logdir}")
            time.sleep(0.1)
        yield procs
    finally:
        stop_processes(procs)


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM (a worker finishes its job), then SIGKILL whatever outlives ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def model_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """The dataset and model-version options every benchmark takes."""
    parser.add_argument("--data", type=Path, default=settings.data_dir / "aclImdb_v1.tar.gz")
    parser.add_argument("--model-dir", type=Path, default=settings.model_dir)
    parser.add_argument("--model-name", default=settings.model_name)
    parser.add_argument("--version", default="LATEST")
