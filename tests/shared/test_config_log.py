import json
import logging
import sys
from pathlib import Path

import pytest
import structlog

from shared.config import DEFAULT_REDIS_URL, ConfigError, Settings
from shared.log import configure_logging, register_secret


def test_defaults_and_overrides_from_a_mapping() -> None:
    assert Settings.from_env({}).redis_url == DEFAULT_REDIS_URL
    s = Settings.from_env(
        {"REDIS_URL": "redis://r:1/2", "MODEL_DIR": "/m", "LOG_LEVEL": "debug", "TF_THREADS": "1"}
    )
    assert (s.redis_url, s.model_dir, s.log_level, s.tf_threads) == (
        "redis://r:1/2",
        Path("/m"),
        "DEBUG",
        1,
    )


@pytest.mark.parametrize(
    "env", [{"LOG_LEVEL": "LOUD"}, {"TF_THREADS": "two"}, {"LOG_FORMAT": "xml"}]
)
def test_invalid_values_fail_fast(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_json_logs_route_stdlib_and_structlog_and_redact_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    structlog.get_logger("t").info("job_done", job_id="j1", bot_token="123:ABC")
    logging.getLogger("rq.worker").warning("from %s", "stdlib")
    logging.getLogger("httpx").info("GET https://api/bot123:ABC/getMe")  # silenced below WARNING
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "job_done" and lines[0]["bot_token"] == "***"
    assert lines[1]["event"] == "from stdlib" and lines[1]["level"] == "warning"
    assert len(lines) == 2


def test_bot_tokens_are_scrubbed_from_messages_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "s3cr3t-value-registered-at-start"
    register_secret(secret)
    token = "4242424:AAH" + "x" * 32
    configure_logging("DEBUG", "json")
    logging.getLogger("telegram.ext").warning("POST https://api.telegram.org/bot%s/getMe", token)
    try:
        raise ConnectionError(f"cannot reach https://api.telegram.org/bot{token}/x ({secret})")
    except ConnectionError:
        structlog.get_logger("t").exception("polling_failed")
    err = capsys.readouterr().err
    lines = [json.loads(x) for x in err.splitlines()]
    assert lines[0]["event"] == "POST https://api.telegram.org/bot***/getMe"
    assert "ConnectionError" in lines[1]["exception"] and "bot***/x" in lines[1]["exception"]
    assert token not in err and secret not in err


def test_logs_go_to_stderr_as_it_is_now_not_as_it_was_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", "json")
    first.close()  # as pytest closes one test's capture; later records must not go there
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("t").info("after_the_swap")
    # the old handler wrote to the closed stream: logging reported "--- Logging error ---" here
    assert [json.loads(line)["event"] for line in second.getvalue().splitlines()] == [
        "after_the_swap"
    ]
