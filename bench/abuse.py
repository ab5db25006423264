"""What each attack of issue 22 costs, before and after, in one run.

    python bench/abuse.py                      # before = 7454303 (the commit before the fix)
    python bench/abuse.py --before <commit> --bomb-mb 1024

For each side, a git worktree of that commit runs its own ``sentiment-api`` and
``sentiment-worker`` (the served model, a copy of ``models/``) on a fresh redis-server; the same
hostile clients (``bench/attacks.py``) replay every attack; the table prints both sides: memory,
CPU seconds, votes accepted, rows leaked, status codes.  Needs redis-server; takes a few minutes
(the "before" side's decompression bomb alone can take a minute of API CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import attacks  # noqa: E402
from shared.local import RedisServer, free_port  # noqa: E402

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
TEXT = "A superb, wonderful film with a dull middle."


class Side:
    """One tree's API and worker on its own Redis."""

    def __init__(self, name: str, tree: Path, tmp: Path, models: Path) -> None:
        self.name, self.tree, self.tmp, self.models = name, tree, tmp, models
        self.redis = RedisServer(tmp / "redis", extra=["--maxmemory", "64mb"])
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = free_port()

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(self.tree),
            "REDIS_URL": self.redis.url,
            "MODEL_DIR": str(self.models),
            "MODEL_NAME": "sentiment-cnn",
            "API_TOKENS": f"alice={ALICE},bob={BOB}",
            "API_RATE_PER_MINUTE": "100000",  # the request rate is not what is measured here
            "FEEDBACK_SALT": "bench-salt",
            "LOG_FORMAT": "json",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_THREADS": "1",
            "TMPDIR": str(self.tmp / "apitmp"),
            "ATTACK_MARKER": str(self.tmp / "attacked"),
            **extra,
        }

    def start(self, module: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{module}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=self.env(),
            cwd=self.tree,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def start_api(self) -> subprocess.Popen[bytes]:
        (self.tmp / "apitmp").mkdir(exist_ok=True)
        api = self.start("api", "--port", str(self.port))
        wait(lambda: _answers(f"{self.url}/healthz"), 60, "the API")
        return api

    def start_worker(self) -> None:
        self.start("worker", "--name", f"bench-{self.name}")
        conn = self.conn()
        wait(lambda: conn.hget("sentiment:served-model", "model_version"), 180, "a worker")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conn(self) -> Any:
        from redis import Redis

        return Redis.from_url(self.redis.url)

    def client(self, token: str = ALICE) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.stop()


def status(send: Callable[[], httpx.Response]) -> int | str:
    """A request's status, or what became of it when the server gave no answer."""
    try:
        return send().status_code
    except httpx.TimeoutException:
        return "timeout"
    except httpx.TransportError as exc:
        return f"no answer ({type(exc).__name__})"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait(check: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.2)


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="abuse-before-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=False)


# -- the attacks: each returns {figure: value} -----------------------------------------------
def unauthenticated_uploads(side: Side) -> dict[str, Any]:
    api = side.procs[-1]
    before = attacks.usage(api.pid)
    with attacks.Peak(api.pid, side.tmp / "apitmp") as files:
        statuses = attacks.concurrent_uploads(side.port, 3, 95 << 20)
    with attacks.Peak(api.pid, side.tmp / "apitmp") as fields:
        parts = attacks.concurrent_uploads(side.port, 3, 95 << 20, fields=True)
    after = attacks.usage(api.pid)
    return {
        "3 x 95 MB file uploads, no token: statuses": statuses,
        "  peak bytes on the API's disk": int(files.disk_bytes),
        "3 x 95 MB in 1 MB form fields, no token: statuses": parts,
        "  API peak RSS growth (MB)": round(max(files.rss_mb, fields.rss_mb) - before.rss_mb, 1),
        "  API CPU for the six (s)": round(after.cpu_s - before.cpu_s, 1),
    }


def bomb(side: Side, megabytes: int) -> dict[str, Any]:
    data = attacks.gzip_bomb(megabytes << 20)
    api = side.procs[-1]
    before = attacks.usage(api.pid)
    started = time.monotonic()
    status, _ = attacks.upload(side.port, iter([data]), len(data), "bomb.tar.gz", ALICE, 600)
    return {
        f"{len(data) >> 10} KB archive inflating to {megabytes} MB: status": status,
        "  API CPU (s)": round(attacks.usage(api.pid).cpu_s - before.cpu_s, 1),
        "  answered after (s)": round(time.monotonic() - started, 1),
    }


def abandoned_streams(side: Side) -> dict[str, Any]:
    """No worker yet: a batch never finishes; 40 result streams are left open."""
    with side.client() as http:
        batch = http.post("/v1/batches", files={"file": ("w.txt", b"A film.\nAnother.\n")}).json()
        time.sleep(2)
        api = side.procs[-1]
        threads = attacks.usage(api.pid).threads
        socks = [attacks.open_stream(side.port, batch["results_url"], ALICE) for _ in range(40)]
        time.sleep(2)
        grown = attacks.usage(api.pid).threads - threads
        started = time.monotonic()
        code: int | str
        try:
            code = http.post(
                "/v1/batches", files={"file": ("x.txt", b"One more.\n")}, timeout=30
            ).status_code
        except httpx.TimeoutException:
            code = "timeout"
        took = time.monotonic() - started
        for sock in socks:
            sock.close()
    return {
        "40 abandoned result streams: API threads added": grown,
        "  next upload: status": code,
        "  next upload: seconds": round(took, 1),
    }


def votes(side: Side) -> dict[str, Any]:
    with side.client() as http:
        codes = [
            http.post(
                "/v1/feedback",
                json={"text": f"Fine {i}.", "label": "negative", "user": f"puppet-{i}"},
            ).status_code
            for i in range(60)
        ]
        plain = [
            http.post("/v1/feedback", json={"text": f"Nice {i}.", "label": "negative"}).status_code
            for i in range(60)
        ]
    return {
        "60 votes under 60 invented names: accepted": codes.count(201),
        "60 votes from one token: accepted": plain.count(201),
    }


def vote_flood(side: Side) -> dict[str, Any]:
    """Long votes from one token under invented names, until refused or 700 sent."""
    long_text = "word " * 19_000 + "end."
    accepted = refused_in_a_row = 0
    last: int | str = "-"
    with side.client(BOB) as http:
        for i in range(700):
            body = {"text": long_text, "label": "positive", "user": f"u{i}", "message_id": f"{i}"}
            last = status(partial(http.post, "/v1/feedback", json=body))
            if last == 403:  # this token may not name users: it votes as itself
                body.pop("user")
                last = status(partial(http.post, "/v1/feedback", json=body))
            accepted += last == 201
            refused_in_a_row = 0 if last == 201 else refused_in_a_row + 1
            if refused_in_a_row >= 5:
                break
    with side.client(ALICE) as other:
        classify = status(lambda: other.post("/v1/classify", json={"review": TEXT}))
    info = side.conn().info("memory")
    return {
        "95 KB votes into a 64 MB Redis, until refused: accepted": accepted,
        "  the refusal": last,
        "  Redis used afterwards (MB)": round(info["used_memory"] / 2**20, 1),
        "  another token's classify afterwards: status": classify,
    }


def caps_and_labels(side: Side) -> dict[str, Any]:
    text = "superb awful film " * 5500
    with side.client() as http:
        started = time.monotonic()
        answer = http.post("/v1/classify?tokens=true", json={"review": text[:99_999]})
        took = time.monotonic() - started
        for i in range(2000):
            status(partial(http.request, f"M{i:05d}", "/nowhere"))
        series = sum(1 for line in http.get("/metrics").text.splitlines() if "M0" in line)
        surrogate = status(
            lambda: http.post(
                "/v1/classify",
                content=b'{"reviews": ["fine", "\\ud800"]}',
                headers={"Content-Type": "application/json"},
            )
        )
        deep = status(
            lambda: http.post(
                "/v1/classify",
                content=b"[" * 100_000 + b"]" * 100_000,
                headers={"Content-Type": "application/json"},
            )
        )
    return {
        "100k-character review with tokens=true: response KB": len(answer.content) >> 10,
        "  highlight spans": len(answer.json()["results"][0].get("highlights", [])),
        "  seconds": round(took, 2),
        "2,000 invented HTTP methods: metric series named after them": series,
        "a lone surrogate in one review: status": surrogate,
        "100k-deep JSON: status": deep,
        "half a request line, then silence: held open (s, max 30)": round(
            attacks.trickle_headers(side.port, 30), 1
        ),
    }


def batches_and_versions(side: Side) -> dict[str, Any]:
    from shared.store import ModelStore

    with side.client() as alice, side.client(BOB) as bob:
        batch = alice.post(
            "/v1/batches", files={"file": ("mine.txt", f"{TEXT}\nPrivate words.\n".encode())}
        ).json()
        alice.get(batch["results_url"])
        leaked = bob.get(batch["results_url"])
        rows = len(leaked.text.splitlines()) if leaked.status_code == 200 else 0
        first = alice.post("/v1/classify", json={"review": TEXT}).json()["model_version"]
        store = ModelStore(side.models, "sentiment-cnn")
        store.rollback()
        target = f"sentiment-cnn/{store.latest()}"
        time.sleep(5)  # workers reload within about a second
        after = alice.post("/v1/classify", json={"review": TEXT}).json()["model_version"]
    return {
        "another token reads a batch: rows it gets": rows,
        f"after a rollback to {target}: the same text answered by": after,
        "  (before the rollback)": first,
    }


def callback_job(side: Side) -> dict[str, Any]:
    from rq import Callback, Retry

    from shared.queues import QUEUE_INTERACTIVE, get_queue
    from shared.schema import JOB_FUNCTION, make_payload

    queue = get_queue(QUEUE_INTERACTIVE, side.conn())
    job = queue.enqueue(
        JOB_FUNCTION,
        make_payload([("x", TEXT)]),
        on_success=Callback("tests.attack_callback.run"),
        retry=Retry(max=5),
    )
    deadline = time.monotonic() + 60
    while job.get_status(refresh=True).value not in ("finished", "failed"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {
        "a job naming an on_success callback: its module imported": (
            side.tmp / "attacked"
        ).exists(),
        "  job status": job.get_status(refresh=True).value,
    }


def attempt(attack: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """An attack's figures, or how it ended when the server broke under it."""
    try:
        return attack(*args)
    except Exception as exc:
        return {f"{attack.__name__}: the run broke off": repr(exc)[:60]}


def run_side(name: str, tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"abuse-{name}-"))
    models = tmp / "models"
    shutil.copytree(ROOT / "models", models)
    for path in models.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    side = Side(name, tree, tmp, models)
    side.redis.start()
    figures: dict[str, Any] = {}
    try:
        # The abandoned streams first, on an API of their own (before the fix they pin its
        # threads for good: every later attack would measure a stalled server).
        first = side.start_api()
        figures |= abandoned_streams(side)
        first.terminate()
        try:
            first.wait(timeout=30)
        except subprocess.TimeoutExpired:
            first.kill()
        side.procs.remove(first)
        side.port = free_port()
        side.start_api()
        figures |= attempt(unauthenticated_uploads, side)
        figures |= attempt(bomb, side, args.bomb_mb)
        side.start_worker()
        for attack in (votes, caps_and_labels, batches_and_versions, callback_job, vote_flood):
            figures |= attempt(attack, side)
    finally:
        side.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="7454303", help="the commit to compare with")
    parser.add_argument("--bomb-mb", type=int, default=1024, help="what the bomb inflates to")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("abuse.py: needs redis-server", file=sys.stderr)
        return 2
    with worktree(args.before) as old:
        (old / "tests" / "attack_callback.py").write_text(
            (ROOT / "tests" / "attack_callback.py").read_text()
        )
        results = {"before": run_side("before", old, args)}
    results["after"] = run_side("after", ROOT, args)
    keys = list(dict.fromkeys([*results["after"], *results["before"]]))
    width = max(len(k) for k in keys) + 2
    print(f"{'':{width}}{'before (' + args.before + ')':>34}  {'after':>34}")
    for key in keys:
        print(
            f"{key:{width}}{json.dumps(results['before'].get(key, '-')):>34}  "
            f"{json.dumps(results['after'].get(key, '-')):>34}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
