"""Settings read from the environment into one frozen, typed value.

Usage::

    settings = Settings.from_env(os.environ)

Every variable is listed in ``.env.example``.  Tests pass a plain dict instead of ``os.environ``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: The password in .env.example: refused, so a copied example never runs in production
#: (bandit B105: the value we refuse, not a credential).
PLACEHOLDER_PASSWORD = "change-me"  # nosec B105
DEFAULT_MODEL_NAME = "sentiment-cnn"
DEFAULT_LOG_LEVEL = "INFO"
LOG_FORMATS = ("auto", "json", "console")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "models"
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"


class ConfigError(ValueError):
    """A setting is missing or has a value that cannot be used."""


def settings_or_exit(prog: str, env: Mapping[str, str] | None = None) -> Settings:
    """Entry points: the settings, or one line on stderr and exit status 2."""
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def env_int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    """The integer setting ``name`` (``default`` when unset); ConfigError outside the bounds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_float(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    """The number setting ``name`` (``default`` when unset); ConfigError outside the bounds."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, got {value:g}")
    return value


def _store_url(url: str) -> str:
    if url and not (url.startswith("s3://") and len(url) > len("s3://")):
        raise ConfigError(f"MODEL_STORE_URL must look like s3://bucket/prefix, got {url!r}")
    return url


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of every component (see ``.env.example``)."""

    redis_url: str = DEFAULT_REDIS_URL
    model_dir: Path = DEFAULT_MODEL_DIR
    model_name: str = DEFAULT_MODEL_NAME
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: str = DEFAULT_LOG_LEVEL
    log_format: str = "auto"
    tf_threads: int = 0
    job_timeout: int = 60
    result_ttl: int = 24 * 3600
    failure_ttl: int = 24 * 3600
    interactive_result_ttl: int = 600
    #: Prometheus scrape port of this process (0: no endpoint); workers add their index.
    metrics_port: int = 0
    #: Interface the scrape port binds to (compose sets 0.0.0.0 inside its network only).
    metrics_addr: str = "127.0.0.1"
    #: Where producers push their counters (empty: they do not).
    pushgateway_url: str = ""
    #: A remote model store (``s3://bucket/prefix``): workers follow its LATEST into
    #: ``model_dir`` (their local cache) and the trainer uploads there.  Empty: local only.
    model_store_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); raise ConfigError when invalid."""
        env = os.environ if env is None else env
        level = env.get("LOG_LEVEL", DEFAULT_LOG_LEVEL).strip().upper() or DEFAULT_LOG_LEVEL
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        fmt = env.get("LOG_FORMAT", "auto").strip().lower() or "auto"
        if fmt not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
        redis_url = env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL
        if urlsplit(redis_url).password == PLACEHOLDER_PASSWORD:
            raise ConfigError(
                "REDIS_URL carries the placeholder password from .env.example: "
                "set REDIS_PASSWORD (compose) or REDIS_URL to a real secret"
            )
        return cls(
            redis_url=redis_url,
            model_dir=Path(env.get("MODEL_DIR", "").strip() or DEFAULT_MODEL_DIR),
            model_name=env.get("MODEL_NAME", "").strip() or DEFAULT_MODEL_NAME,
            data_dir=Path(env.get("DATA_DIR", "").strip() or DEFAULT_DATA_DIR),
            log_level=level,
            log_format=fmt,
            tf_threads=env_int(env, "TF_THREADS", 0),
            job_timeout=env_int(env, "JOB_TIMEOUT", 60, minimum=1),
            result_ttl=env_int(env, "RESULT_TTL_S", 24 * 3600, minimum=60),
            failure_ttl=env_int(env, "FAILURE_TTL_S", 24 * 3600, minimum=60),
            interactive_result_ttl=env_int(env, "INTERACTIVE_RESULT_TTL_S", 600, minimum=10),
            metrics_port=env_int(env, "METRICS_PORT", 0, maximum=65535),
            metrics_addr=env.get("METRICS_ADDR", "").strip() or "127.0.0.1",
            pushgateway_url=env.get("PUSHGATEWAY_URL", "").strip(),
            model_store_url=_store_url(env.get("MODEL_STORE_URL", "").strip()),
        )
