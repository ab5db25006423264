"""``sentiment-api`` as users run it: the real process (uvicorn), a real redis-server and a real
worker with the tiny model.  Every endpoint, every bad input, auth and the rate limit, and a
batch whose results equal ``sentiment-enqueue``'s for the same file."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.local import RedisServer, free_port, start_api, stop_processes, worker_env, workers
from shared.store import ModelStore
from tests.conftest import REPO, TEST_SALT, env_for

pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
QUEUE = "rq:queue:sentiment-interactive"
JSON = "application/json"


@dataclass
class Api:
    url: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    def client(self, token: str | None = ALICE) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def stack(
    tiny_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("api")
    with RedisServer.temporary() as server:
        env = env_for(server.url, tiny_store)
        with workers(env, 1, tmp):
            api_env = {**env, "API_TOKENS": f"alice={ALICE},bob={BOB}", "API_TIMEOUT_S": "30"}
            port = free_port()
            log = tmp / "api.log"
            proc = start_api(api_env, ["--port", str(port)], log)
            try:
                yield Api(f"http://127.0.0.1:{port}", api_env, log, proc), env
            finally:
                stop_processes([proc])


@pytest.fixture
def api(stack: tuple[Api, dict[str, str]]) -> Api:
    return stack[0]


def test_the_tutorials_curl_line_with_a_form_field_and_basic_auth(api: Api) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    done = subprocess.run(
        [
            curl,
            "-sS",
            "-u",
            f"{ALICE}:",
            "-F",
            "review=A superb, wonderful film.",
            f"{api.url}/v1/classify",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    body = json.loads(done.stdout)
    (result,) = body["results"]
    assert result["label"] == "positive" and result["error"] is None
    assert set(result["scores"]) == {"negative", "positive"}
    assert result["top_words"] and body["model_version"].startswith("tiny/")
    # highlights are spans of the text as sent, each with its weight toward positive
    text = "A superb, wonderful film."
    words = {text[s:e] for s, e, _ in result["highlights"]}
    assert words and words <= {"A", "superb", "wonderful", "film"}


def test_json_single_and_many_with_per_review_errors_and_top_words(api: Api) -> None:
    with api.client() as http:
        one = http.post("/v1/classify", json={"review": "Awful and boring."}).json()
        assert one["results"][0]["label"] == "negative"
        many = http.post(
            "/v1/classify?top_words=2",
            json={"reviews": ["A superb film.", "", {"id": "x", "text": "Dull, awful."}, 7]},
        ).json()
    results = many["results"]
    assert [r["id"] for r in results] == ["1", "2", "x", "4"]
    assert [r.get("label") for r in results] == ["positive", None, "negative", None]
    assert results[1]["error"] == "empty review" and "string" in results[3]["error"]
    assert all(len(r["top_words"]) <= 2 for r in results if not r["error"])


def test_the_query_is_read_as_documented_and_a_malformed_one_is_a_422(api: Api) -> None:
    body = {"review": "A superb film. Dull ending."}
    with api.client() as http:
        answer = http.post("/v1/classify?top_words=1.0&tokens=Y&sentences=off", json=body)
        (result,) = answer.json()["results"]
        assert answer.headers["content-type"] == "application/json"
        assert len(result["top_words"]) <= 1 and result["tokens"] and "sentences" not in result
        for query, name in (
            ("top_words=-1", "top_words"),
            (f"top_words={10**6}", "top_words"),
            ("top_words=two", "top_words"),
            ("top_words=1.5", "top_words"),
            ("top_words=%D9%A3", "top_words"),  # an Arabic-Indic three
            ("top_words=inf", "top_words"),
            ("tokens=maybe", "tokens"),
            ("sentences=2", "sentences"),
        ):
            bad = http.post(f"/v1/classify?{query}", json=body)
            assert bad.status_code == 422 and f"query.{name}" in bad.json()["error"], query


def test_sentences_with_offsets_and_a_verdict_unless_asked_not_to(api: Api) -> None:
    text = "A superb film!  Dull, awful ending.<br />Loved the cast"
    with api.client() as http:
        full = http.post("/v1/classify", json={"review": text}).json()["results"][0]
        bare = http.post("/v1/classify?sentences=false", json={"review": text}).json()
    cut = [text[s["start"] : s["end"]] for s in full["sentences"]]
    assert cut == ["A superb film!", "Dull, awful ending.", "Loved the cast"]
    assert all(s["label"] in ("positive", "negative") for s in full["sentences"])
    assert full["verdict"] in ("positive", "negative", "mixed", "neutral")
    assert set(full["about"]) == {"positive", "negative"}
    (plain,) = bare["results"]
    assert "sentences" not in plain and plain["verdict"] == full["verdict"]
    assert plain["label"] == full["label"] and plain["scores"] == full["scores"]


def test_a_review_in_another_language_says_so_and_is_uncertain(api: Api) -> None:
    reviews = [
        "Ce film était vraiment ennuyeux et beaucoup trop long.",
        "La comida estaba fría y el camarero fue grosero.",
        "A wonderful, moving film with superb acting.",
    ]
    with api.client() as http:
        results = http.post("/v1/classify", json={"reviews": reviews}).json()["results"]
    assert [r["language"] for r in results] == ["fr", "es", "en"]
    assert results[0]["uncertain"] and results[1]["uncertain"]
    assert all(s["uncertain"] for r in results[:2] for s in r["sentences"])


def test_tokens_option_weights_every_word(api: Api) -> None:
    with api.client() as http:
        body = http.post(
            "/v1/classify?tokens=true", json={"review": "A superb film, awful ending."}
        ).json()
    (result,) = body["results"]
    assert [t for t, _ in result["tokens"]][:2] == ["a", "superb"]
    assert len(result["highlights"]) >= 4


def test_auth_401_403_and_rotation_with_named_tokens(api: Api) -> None:
    with api.client(token=None) as http:
        missing = http.post("/v1/classify", json={"review": "fine"})
        assert missing.status_code == 401 and "error" in missing.json()
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = http.post(
            "/v1/classify", json={"review": "fine"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 403 and "not valid" in wrong.json()["error"]
        basic = base64.b64encode(f"{BOB}:".encode()).decode()
        ok = http.post(
            "/v1/classify",
            json={"review": "fine film"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert ok.status_code == 200
        # health, readiness, metrics and the page need no token
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz").json()
        assert ready["ready"] is True and ready["workers"] >= 1
        assert http.get("/").status_code == 200
        classify = http.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]
        assert [p["name"] for p in classify["parameters"]] == ["top_words", "tokens", "sentences"]
        assert {"200", "422"} <= set(classify["responses"])
        assert set(classify["requestBody"]["content"]) == {
            "multipart/form-data",
            "application/json",
        }
    log = api.log.read_text()
    assert ALICE not in log and BOB not in log  # tokens never logged
    assert '"caller": "bob"' in log  # ... their names are


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [
        ({"files": {"other": (None, "x")}}, 422, "missing form field 'review'"),
        ({"files": {"review": (None, "   ")}}, 422, "empty review"),
        ({"files": {"review": ("r.txt", b"\xff\xfe bad")}}, 400, "UTF-8"),
        ({"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400, "UTF-8"),
        ({"content": b"{oops", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
        ({"json": {"text": "x"}}, 422, "exactly one of"),
        ({"json": {"reviews": []}}, 422, "non-empty"),
        ({"json": {"reviews": ["ok"] * 1025}}, 413, "at most 1024"),
        ({"json": {"review": "x" * 100_001}}, 422, "longer than"),
        ({"content": b"review", "headers": {"Content-Type": "text/plain"}}, 415, "form field"),
        (
            {"content": b"x" * (2 << 20), "headers": {"Content-Type": "application/json"}},
            413,
            "limit",
        ),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    api: Api, request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    with api.client() as http:
        response = http.post("/v1/classify", **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_markup_comes_back_as_text_not_html(api: Api) -> None:
    text = "<script>alert(1)</script> <b>superb</b> film"
    with api.client() as http:
        (result,) = http.post("/v1/classify", json={"review": text}).json()["results"]
    assert result["label"] in ("positive", "negative")
    assert all(0 <= s < e <= len(text) for s, e, _ in result["highlights"])


def test_model_and_metrics(api: Api) -> None:
    with api.client() as http:
        model = http.get("/v1/model").json()
        assert model["model_version"].startswith("tiny/") and model["worker"]
        http.post("/v1/classify", json={"review": "A superb film."})
        metrics = http.get("/metrics").text
    assert (
        'sentiment_api_requests_total{endpoint="/v1/classify",method="POST",status="200"}'
        in metrics
    )
    assert "sentiment_api_reviews_total" in metrics
    assert "sentiment_api_request_seconds_bucket" in metrics


def test_unknown_batch_id_is_404(api: Api) -> None:
    with api.client() as http:
        assert http.get("/v1/batches/0123456789abcdef01234567").status_code == 404
        assert http.get("/v1/batches/../../etc").status_code == 404
        assert http.get("/v1/batches/nope/results").status_code == 404


def test_batch_upload_results_equal_the_producers(
    api: Api, stack: tuple[Api, dict[str, str]], tmp_path: Path
) -> None:
    lines = [f"review {i}: {'a superb film' if i % 2 else 'awful and boring'}" for i in range(300)]
    lines[7] = ""
    lines[11] = "<b>markup</b> & more"
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    with api.client() as http:
        created = http.post("/v1/batches", files={"file": ("in.txt", src.read_bytes())})
        assert created.status_code == 202, created.text
        batch = created.json()
        assert batch["state"] == "preparing"  # answered before the file is read twice
        jsonl = http.get(f"{batch['results_url']}?format=jsonl")  # waits for it, then streams
        assert jsonl.status_code == 200
        status = http.get(batch["status_url"]).json()
        assert status["state"] == "ready" and status["rows"] == 300 and status["invalid"] == 1
        assert status["complete"] is True and status["rows_done"] == 300
        as_csv = http.get(f"{batch['results_url']}?format=csv").text
    rows = [json.loads(x) for x in jsonl.text.splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 301))
    # The producer, on the same file, writes the same lines.
    out = tmp_path / "out.jsonl"
    env = stack[1]
    done = subprocess.run(
        [sys.executable, "-m", "shared.commands.enqueue", str(src), "-o", str(out)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text() == jsonl.text
    records = list(csv.DictReader(io.StringIO(as_csv)))
    assert len(records) == 300 and records[11]["label"] in ("positive", "negative")


def test_batch_bad_files(api: Api) -> None:
    with api.client() as http:
        binary = http.post("/v1/batches", files={"file": ("x.txt", bytes(range(256)) * 10)})
        assert binary.status_code == 422 and "x.txt" in binary.json()["error"]
        empty = http.post("/v1/batches", files={"file": ("e.txt", b"")})
        assert empty.status_code == 422 and "empty" in empty.json()["error"]
        missing = http.post("/v1/batches", files={"nothing": (None, "here")})
        assert missing.status_code == 422 and "file" in missing.json()["error"]
        raw = http.post("/v1/batches", content=b"not a form", headers={"Content-Type": "text/csv"})
        assert raw.status_code == 415 and "multipart" in raw.json()["error"]
        # An archive that turns out, once read, to hold no reviews: the batch says why.
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            info = tarfile.TarInfo("notes/readme.txt")
            info.size = 5
            archive.addfile(info, io.BytesIO(b"hello"))
        created = http.post("/v1/batches", files={"file": ("b.tar.gz", buffer.getvalue())})
        assert created.status_code == 202, created.text
        failed = http.get(created.json()["results_url"])
        assert failed.status_code == 422 and "b.tar.gz" in failed.json()["error"]
        status = http.get(created.json()["status_url"]).json()
        assert status["state"] == "failed" and "no aclImdb reviews" in status["error"]


def test_rate_limit_429_per_token(stack: tuple[Api, dict[str, str]], tmp_path: Path) -> None:
    api, _ = stack
    env = {**api.env, "API_RATE_PER_MINUTE": "3"}
    port = free_port()
    proc = start_api(env, ["--port", str(port)], tmp_path / "limited.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            alice = {"Authorization": f"Bearer {ALICE}"}
            codes = [http.get("/v1/model", headers=alice).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            limited = http.get("/v1/model", headers=alice)
            assert (
                int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["error"]
            )
            # another token has its own budget
            assert (
                http.get("/v1/model", headers={"Authorization": f"Bearer {BOB}"}).status_code == 200
            )
            assert 'sentiment_api_rate_limited_total{token="alice"}' in http.get("/metrics").text
    finally:
        stop_processes([proc])


def test_no_workers_503_after_the_timeout_and_the_job_is_cancelled(tmp_path: Path) -> None:
    from redis import Redis

    with RedisServer.temporary() as server:
        env = worker_env(server.url, API_TOKENS=ALICE, API_TIMEOUT_S="1", FEEDBACK_SALT=TEST_SALT)
        port = free_port()
        proc = start_api(env, ["--port", str(port)], tmp_path / "api.log")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                # Ready without workers: requests are what wakes workers scaled to zero.
                ready = http.get("/readyz")
                assert ready.status_code == 200 and ready.json()["workers"] == 0
                answer = http.post(
                    "/v1/classify",
                    json={"review": "nobody will read this"},
                    headers={"Authorization": f"Bearer {ALICE}"},
                )
            assert answer.status_code == 503 and "no worker answered" in answer.json()["error"]
            conn = Redis.from_url(server.url)
            deadline = time.monotonic() + 30  # the cancellation runs in the background
            while (conn.llen(QUEUE) or conn.keys("rq:job:*")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert conn.llen(QUEUE) == 0  # cancelled
            assert not conn.keys("rq:job:*")  # and its text deleted
        finally:
            stop_processes([proc])


def test_start_refuses_without_tokens_and_insecure_local_binds_loopback_only(
    tmp_path: Path,
) -> None:
    env = worker_env("redis://127.0.0.1:9/0")
    env.pop("API_TOKENS", None)
    base = [sys.executable, "-m", "api"]
    no_tokens = subprocess.run(base, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert no_tokens.returncode == 2 and "API_TOKENS is not set" in no_tokens.stderr
    exposed = subprocess.run(
        [*base, "--insecure-local", "--host", "0.0.0.0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert exposed.returncode == 2 and "loopback" in exposed.stderr
    weak = subprocess.run(
        base,
        env={**env, "API_TOKENS": "change-me"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert weak.returncode == 2 and "too weak" in weak.stderr and "change-me" not in weak.stderr


def test_feedback_is_stored_once_per_message_and_user_and_bad_votes_are_refused(
    api: Api,
) -> None:
    from redis import Redis

    from shared import feedback

    conn = Redis.from_url(api.env["REDIS_URL"])
    with api.client() as alice, api.client(BOB) as bob:
        text = "The plot was thin but the actors were superb."
        first = alice.post(
            "/v1/feedback",
            json={"text": text, "label": "negative", "predicted": "positive", "message_id": "m1"},
        )
        assert first.status_code == 201, first.text
        # The same caller changes their mind: the later vote replaces the earlier.
        again = alice.post(
            "/v1/feedback",
            json={"text": text, "label": "positive", "predicted": "positive", "message_id": "m1"},
        )
        assert again.status_code == 201
        assert (
            bob.post(
                "/v1/feedback", json={"text": text, "label": "negative", "message_id": "m1"}
            ).status_code
            == 201
        )
        votes = [f for _, f in feedback.entries(conn) if f.message.endswith(":m1")]
        assert sorted((f.message, f.label) for f in votes) == [
            ("api:alice:m1", "positive"),  # alice's second vote replaced her first
            ("api:bob:m1", "negative"),
        ]
        assert all(f.source == "api" and f.text == text for f in votes)
        assert len({f.user for f in votes}) == 2 and "alice" not in {f.user for f in votes}
        # Bad input: a label we do not have, an empty text, a text over the review limit,
        # a body over the API's limit, an unknown field; nothing stored for any of them.
        before = conn.xlen(feedback.STREAM_KEY)
        for body, status in (
            ({"text": text, "label": "meh"}, 422),
            ({"text": "   ", "label": "positive"}, 422),
            ({"text": "x" * 200_000, "label": "positive"}, 422),
            ({"text": "x" * (1 << 20), "label": "positive"}, 413),
            ({"text": text, "label": "positive", "admin": True}, 422),
        ):
            answer = alice.post("/v1/feedback", json=body)
            assert answer.status_code == status, (answer.status_code, answer.text[:200])
            assert "error" in answer.json()
        assert conn.xlen(feedback.STREAM_KEY) == before
        # Without a token: 401, nothing stored.
        with api.client(None) as anonymous:
            assert (
                anonymous.post("/v1/feedback", json={"text": text, "label": "positive"}).status_code
                == 401
            )


def test_a_flood_of_votes_from_one_token_is_cut_at_the_feedback_rate(api: Api) -> None:
    from redis import Redis

    from shared import feedback

    conn = Redis.from_url(api.env["REDIS_URL"])
    recent = time.time() - 60  # votes bob sent in earlier tests of this module count too
    spent = sum(
        1 for _, f in feedback.entries(conn) if f.message.startswith("api:bob:") and f.at > recent
    )
    with api.client(BOB) as bob:
        codes = [
            bob.post(
                "/v1/feedback",
                json={"text": f"Fine film {i}.", "label": "positive", "message_id": f"f{i}"},
            ).status_code
            for i in range(25)
        ]
    accepted = codes.index(429)
    assert codes == [201] * accepted + [429] * (25 - accepted)
    assert 20 - spent <= accepted <= 20  # one token's budget, whatever else it sent
