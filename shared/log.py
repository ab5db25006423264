"""structlog set-up: call :func:`configure_logging` once, at an entry point.

Our log lines and those of our dependencies (rq, httpx, keras, ...) go through one
``ProcessorFormatter`` on the root logger: JSON when stderr is not a terminal (containers, CI),
a readable console renderer otherwise.  Library modules only call ``structlog.get_logger()``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Loggers of dependencies that are noisy at INFO, or that print URLs containing secrets.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "absl", "h5py")


#: Telegram bot tokens ("123456:AA...") wherever they appear, e.g. in a URL inside an error.
_BOT_TOKEN = re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{30,}")
_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Never print ``value``: it is replaced by *** in every log line, exceptions included."""
    if value:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """``text`` with registered secrets and anything shaped like a bot token replaced."""
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    return _BOT_TOKEN.sub("***", text)


def _scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Remove registered secrets and bot tokens from every string value (after formatting)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop values of keys that look like secrets, wherever they come from."""
    for key in list(event_dict):
        if any(word in key.lower() for word in ("token", "password", "secret")):
            event_dict[key] = "***"
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Route structlog and stdlib logging through one pipeline (idempotent)."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            # Below the level: dropped before any other work (a worker's per-job lines at
            # WARNING cost 0.1 ms a job through the whole chain; issue 25's profile).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _route_uncaught_exceptions()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to ``sys.stderr`` as it is when a record is emitted, not as
    it was when logging was configured: a stream swapped out and closed since (pytest's capture
    of one test, a daemon's redirection) would otherwise make every later record a "Logging
    error" on the real stderr."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _route_uncaught_exceptions() -> None:
    """Uncaught exceptions (main thread and others) go through the scrubbing pipeline, not
    straight to stderr, where a secret in an exception's message would be printed in clear."""
    logger = logging.getLogger("uncaught")

    def main_hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        logger.critical("uncaught_exception", exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            logger.critical(
                "uncaught_exception_in_thread",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
