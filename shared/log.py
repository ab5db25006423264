"""structlog set-up: call :func:`configure_logging` once, at an entry point.

Our log lines and those of our dependencies (rq, httpx, keras, ...) go through one
``ProcessorFormatter`` on the root logger: JSON when stderr is not a terminal (containers, CI),
a readable console renderer otherwise.  Library modules only call ``structlog.get_logger()``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

#: Loggers of dependencies that are noisy at INFO, or that print URLs containing secrets.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "absl", "h5py")


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
            structlog.processors.format_exc_info if json_output else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _identity(_: Any, __: str, event_dict: Any) -> Any:
    return event_dict
