"""One caller's actions stay theirs: the attacks of issue 22 on a real ``sentiment-api``, a real
redis-server and a real worker, each refused.

* cheap refusals: no body byte read before the token (three 95 MB uploads without one), a
  decompression bomb refused while it streams, slow headers and bodies cut, a connection cap,
  capped highlights, metrics labels from closed sets, a lone surrogate or deep JSON answered 4xx;
* batches belong to their token and never collide; results streams hold no thread and end;
* votes: the voter is the token (or a trusted token's user), rates hold across replicas, a
  voter's storage is bounded and feedback never takes the queue's memory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from bench import attacks
from shared.local import RedisServer, free_port, start_api, stop_processes, workers
from shared.store import ModelStore
from tests.conftest import env_for

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
MOD = "moderator-token-0123456789ab"
TOKENS = f"alice={ALICE},bob={BOB},mod={MOD}"


@dataclass
class Api:
    port: int
    proc: subprocess.Popen[bytes]
    tmp: Path  # the process's TMPDIR: what it writes to disk
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = ALICE) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def launch(env: dict[str, str], tmp: Path, **extra: str) -> Api:
    folder = tmp / f"api-{free_port()}"
    (folder / "tmp").mkdir(parents=True)
    port = free_port()
    api_env = {**env, "API_TOKENS": TOKENS, "TMPDIR": str(folder / "tmp"), **extra}
    proc = start_api(api_env, ["--port", str(port)], folder / "api.log")
    return Api(port, proc, folder / "tmp", api_env)


@pytest.fixture(scope="module")
def stack(tiny_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("trust")
    with RedisServer.temporary() as server:
        env = env_for(server.url, tiny_store)
        with workers(env, 1, tmp):
            api = launch(
                env,
                tmp,
                API_FEEDBACK_TRUSTED="mod",
                API_HEADER_TIMEOUT_S="1",
                API_BODY_IDLE_S="1",
                API_MAX_CONNECTIONS="40",
            )
            try:
                yield api
            finally:
                stop_processes([api.proc])


def test_unauthenticated_uploads_are_refused_before_a_body_byte_is_read(stack: Api) -> None:
    before = attacks.usage(stack.proc.pid)
    size = 95 << 20
    statuses = attacks.concurrent_uploads(stack.port, 3, size)
    after = attacks.usage(stack.proc.pid)
    assert statuses == [401, 401, 401]
    assert after.rss_mb - before.rss_mb <= 60, (before, after)
    assert attacks.files_under(stack.tmp) == 0  # nothing written to disk
    # ... and a wrong token the same way (403), with the upload route's own size limit.
    status, _ = attacks.upload(stack.port, attacks.zeros(size), size, token="not-a-real-token")
    assert status == 403 and attacks.files_under(stack.tmp) == 0


def test_a_decompression_bomb_is_refused_while_it_streams_in(stack: Api) -> None:
    bomb = attacks.gzip_bomb(1 << 30)
    assert len(bomb) < 2 << 20  # about 1 MB that would inflate to 1 GB
    before = attacks.usage(stack.proc.pid)
    status, body = attacks.upload(
        stack.port, iter([bomb]), len(bomb), filename="bomb.tar.gz", token=ALICE
    )
    spent = attacks.usage(stack.proc.pid).cpu_s - before.cpu_s
    assert status == 413 and b"inflates" in body, body[:300]
    assert spent <= 5.0
    assert attacks.files_under(stack.tmp) == 0  # the partial upload is gone too


def test_slow_headers_and_bodies_are_cut_and_connections_are_capped(stack: Api) -> None:
    assert attacks.trickle_headers(stack.port, 20) < 5  # API_HEADER_TIMEOUT_S=1
    status, took = attacks.trickle_body(stack.port, ALICE, 20)
    assert status == 408 and took < 5  # API_BODY_IDLE_S=1
    closed, socks = attacks.open_idle(stack.port, 60)  # API_MAX_CONNECTIONS=40
    try:
        assert closed >= 20
    finally:
        for sock in socks:
            sock.close()
    with stack.client() as http:  # the server is none the worse
        assert http.get("/healthz").status_code == 200


def _raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send one request over a plain socket; what came back before the server closed."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_request_headers_are_capped_in_size_but_bodies_are_not_mistaken_for_them(
    stack: Api,
) -> None:
    big = b"x" * (20 * 1024)
    head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + big + b"\r\nConnection: close\r\n\r\n"
    assert _raw_request(stack.port, head).startswith(b"HTTP/1.1 431")
    # With a body behind them, and headers that never end.
    body = b'{"review": "fine"}'
    with_body = head.replace(b"GET /healthz", b"POST /v1/classify").replace(
        b"\r\n\r\n", b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    assert _raw_request(stack.port, with_body, body).startswith(b"HTTP/1.1 431")
    endless = b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-More: y\r\n" * 3000
    assert _raw_request(stack.port, endless).startswith(b"HTTP/1.1 431")
    fine = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + big[:8000] + b"\r\n"
    assert _raw_request(stack.port, fine + b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    # A body sent in the same packets as small headers is a body, whatever its size.
    body = json.dumps({"review": "A superb film. " * 4000}).encode()
    post = (
        b"POST /v1/classify HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ALICE.encode() + b"\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    answer = _raw_request(stack.port, post, body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    # Answered before its body was read (a bad query): one answer, not a 431 after it.
    refused = _raw_request(
        stack.port, post.replace(b"/v1/classify", b"/v1/classify?tokens=9"), body
    )
    assert refused.startswith(b"HTTP/1.1 422") and refused.count(b"HTTP/1.1 ") == 1, refused[:300]
    # Pipelined behind a good request: that one is answered, then the big one gets its 431.
    good = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    both = _raw_request(stack.port, good + head)
    assert both.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 431" in both, both[:400]


def test_work_proportional_to_input_is_capped_and_labels_are_a_closed_set(stack: Api) -> None:
    text = "superb awful film " * 5000  # 15,000 weighted words
    with stack.client() as http:
        answer = http.post("/v1/classify?tokens=true", json={"review": text})
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["results"]
        assert len(result["highlights"]) <= 1000 and result["highlights_truncated"] is True
        # A request near the body limit, a thousand reviews: spans are shared out, bounded.
        many = http.post("/v1/classify?tokens=true", json={"reviews": [text[:900]] * 1000})
        assert many.status_code == 200, many.text[:300]
        spans = sum(len(r["highlights"]) for r in many.json()["results"])
        assert spans <= 50_000 and len(many.content) < 4 << 20
        # Methods HTTP knows but we do not serve reach the app and are counted as "other";
        # made-up ones are refused by the HTTP parser before they reach it.
        for method in ("PROPFIND", "MKCOL", "PURGE", "SEARCH"):
            assert http.request(method, "/v1/classify").status_code in (400, 405)
        for i in range(30):
            assert http.request(f"X{i:04d}", "/v1/classify").status_code in (400, 405)
        metrics = http.get("/metrics").text
    assert "X0001" not in metrics and "PROPFIND" not in metrics
    assert 'method="other"' in metrics


def test_a_lone_surrogate_fails_only_its_review_and_deep_json_is_a_400(stack: Api) -> None:
    body = b'{"reviews": ["A superb film.", "bad \\ud800 text"]}'
    deep = b"[" * 100_000 + b"]" * 100_000
    with stack.client() as http:
        mixed = http.post(
            "/v1/classify", content=body, headers={"Content-Type": "application/json"}
        )
        assert mixed.status_code == 200, mixed.text
        good, bad = mixed.json()["results"]
        assert good["label"] == "positive" and "Unicode" in bad["error"]
        nested = http.post(
            "/v1/classify", content=deep, headers={"Content-Type": "application/json"}
        )
        assert nested.status_code == 400 and "nested" in nested.json()["error"]
        one = http.post(
            "/v1/classify",
            content=b'{"review": "\\udfff"}',
            headers={"Content-Type": "application/json"},
        )
        assert one.status_code == 422


def _upload(http: httpx.Client, name: str, data: bytes) -> dict[str, str]:
    created = http.post("/v1/batches", files={"file": (name, data)})
    assert created.status_code == 202, created.text
    return dict(created.json())


def test_batches_belong_to_their_token_and_identical_uploads_never_collide(stack: Api) -> None:
    lines = [f"review {i}: {'a superb film' if i % 2 else 'awful, boring'}" for i in range(5000)]
    data = ("\n".join(lines) + "\n").encode()
    with stack.client(ALICE) as alice, stack.client(BOB) as bob:
        with ThreadPoolExecutor(2) as pool:  # the same file, twice at once
            first, second = pool.map(lambda _: _upload(alice, "same.txt", data), range(2))
        assert first["batch_id"] != second["batch_id"]
        outputs = []
        for batch in (first, second):
            # Another token learns nothing about the batch: the answer for an unknown id.
            assert bob.get(batch["status_url"]).status_code == 404
            assert bob.get(batch["results_url"]).status_code == 404
            rows = [json.loads(x) for x in alice.get(batch["results_url"]).text.splitlines()]
            outputs.append(rows)
    for rows in outputs:
        assert [r["line"] for r in rows] == list(range(1, 5001))  # none twice, none missing
        assert all(r["label"] in ("positive", "negative") for r in rows)
    assert outputs[0] == outputs[1]


def test_votes_count_for_the_token_and_a_trusted_source_speaks_for_its_users(
    stack: Api,
) -> None:
    conn = Redis.from_url(stack.env["REDIS_URL"])

    def vote(http: httpx.Client, i: int, **extra: str) -> int:
        body = {"text": f"A fine film {i}.", "label": "negative", "message_id": f"v{i}", **extra}
        return http.post("/v1/feedback", json=body).status_code

    with stack.client(ALICE) as alice, stack.client(MOD) as mod:
        # Sixty invented names from an ordinary token: refused, nothing stored.
        names = [vote(alice, i, user=f"sock-puppet-{i}") for i in range(60)]
        assert set(names) == {403}
        # Trusted: each end user is a voter with their own rate.
        codes = [vote(mod, i, user=f"user-{i % 3}") for i in range(63)]
        assert codes.count(201) == 60 and codes.count(429) == 3
    from shared import feedback

    stored = [f for _, f in feedback.entries(conn) if f.message.startswith("api:mod:")]
    assert len({f.user for f in stored}) == 3 and len(stored) == 60
    assert not [f for _, f in feedback.entries(conn) if f.message.startswith("api:alice:")]


def test_limits_hold_across_replicas_and_feedback_never_fills_the_queues_memory(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    # A Redis capped small: feedback may use half of it; the queues keep the rest.
    with RedisServer.temporary(extra=["--maxmemory", "12mb"]) as server:
        env = {**env_for(server.url, tiny_store), "FEEDBACK_RATE_PER_MINUTE": "1000"}
        with workers(env, 1, tmp_path):
            replicas = [
                launch(env, tmp_path, API_RATE_PER_MINUTE="1000", FEEDBACK_RATE_PER_MINUTE="20"),
                launch(env, tmp_path, API_RATE_PER_MINUTE="1000", FEEDBACK_RATE_PER_MINUTE="20"),
            ]
            long_vote = {"text": "word " * 3999 + "end.", "label": "positive"}
            try:
                clients = [r.client(BOB) for r in replicas]
                codes = [
                    clients[i % 2]
                    .post("/v1/feedback", json={**long_vote, "message_id": f"m{i}"})
                    .status_code
                    for i in range(30)
                ]
                assert codes.count(201) == 20 and codes.count(429) == 10  # one budget for two
                # The flooder's own trusted twin: far more long votes, until storage refuses.
                big = launch(
                    env,
                    tmp_path,
                    API_RATE_PER_MINUTE="100000",
                    FEEDBACK_RATE_PER_MINUTE="100000",
                    API_FEEDBACK_TRUSTED="alice",
                    FEEDBACK_TRUSTED_RATE_PER_MINUTE="100000",
                )
                replicas.append(big)
                with big.client(ALICE) as alice:
                    refused = None
                    for i in range(2000):
                        answer = alice.post(
                            "/v1/feedback",
                            json={**long_vote, "message_id": f"x{i}", "user": f"u{i}"},
                        )
                        if answer.status_code != 201:
                            refused = answer
                            break
                    assert refused is not None and refused.status_code == 429
                    assert "storage full" in refused.json()["error"]
                # Every other caller still gets answers.
                with replicas[0].client(BOB) as bob:
                    ok = bob.post("/v1/classify", json={"review": "A superb, wonderful film."})
                    assert ok.status_code == 200, ok.text
                info = Redis.from_url(server.url).info("memory")
                assert info["used_memory"] < 0.75 * info["maxmemory"]
            finally:
                for client in clients:
                    client.close()
                stop_processes([r.proc for r in replicas])


def test_a_stream_nobody_reads_holds_no_thread_and_every_stream_ends(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    """No worker: the batch's jobs never end.  Forty abandoned result streams, then a new
    upload is still answered at once, and a stream that waits ends by itself."""
    with RedisServer.temporary() as server:
        api = launch(env_for(server.url, tiny_store), tmp_path, API_RESULTS_WAIT_S="3")
        try:
            with api.client() as http:
                batch = _upload(http, "wait.txt", b"A superb film.\nAn awful film.\n")
                deadline = time.monotonic() + 30
                while http.get(batch["status_url"]).json()["state"] != "ready":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                threads = attacks.usage(api.proc.pid).threads
                abandoned = [
                    attacks.open_stream(api.port, batch["results_url"], ALICE) for _ in range(40)
                ]
                time.sleep(1.0)
                assert attacks.usage(api.proc.pid).threads <= threads + 4
                started = time.monotonic()
                _upload(http, "more.txt", b"Another review.\n")
                assert time.monotonic() - started < 5
                rows = [json.loads(x) for x in http.get(batch["results_url"]).text.splitlines()]
                assert [r["line"] for r in rows] == [1, 2]
                assert all("not answered within 3 s" in r["error"] for r in rows)
                for sock in abandoned:
                    sock.close()
        finally:
            stop_processes([api.proc])
