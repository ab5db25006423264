"""``sentiment-api`` / ``python -m api``: the HTTP API and its web page.

Needs a Redis with workers (``REDIS_URL``) and tokens in ``API_TOKENS`` (comma-separated,
``name=token`` or a bare token).  Without tokens it refuses to start, unless run with
``--insecure-local``, which serves without auth on 127.0.0.1 only (a laptop try-out).

  curl -u TOKEN: -F review="A superb film." http://127.0.0.1:8000/v1/classify
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence

import structlog

from shared.cli import command_parser
from shared.config import ConfigError, settings_or_exit
from shared.log import configure_logging, register_secret
from shared.queues import RedisUnavailable, check_memory_policy, connect, redact_url, wait_for_redis

log = structlog.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("sentiment-api", __doc__, whole=True)
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)"
    )
    parser.add_argument(
        "--insecure-local",
        action="store_true",
        help="serve without tokens, on a loopback address only",
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1-65535, got {args.port}")
    settings = settings_or_exit("sentiment-api")
    from api.config import ApiSettings

    try:
        api_settings = ApiSettings.from_env()
    except ConfigError as exc:
        print(f"sentiment-api: {exc}", file=sys.stderr)
        return 2
    for token in api_settings.tokens.values():
        register_secret(token)
    if not api_settings.tokens and not args.insecure_local:
        print(
            "sentiment-api: API_TOKENS is not set: give clients tokens (see .env.example), or "
            "try it on this machine only with --insecure-local",
            file=sys.stderr,
        )
        return 2
    if args.insecure_local and not is_loopback(args.host):
        print(
            f"sentiment-api: --insecure-local serves without auth and binds a loopback address "
            f"only, not {args.host!r}",
            file=sys.stderr,
        )
        return 2
    if args.insecure_local and api_settings.tokens:
        print("sentiment-api: API_TOKENS is set: drop --insecure-local", file=sys.stderr)
        return 2
    from shared.feedback import salt_is_set

    if not args.insecure_local and not salt_is_set():
        print(
            "sentiment-api: FEEDBACK_SALT is not set: votes are kept under keyed pseudonyms "
            "of their voters; make one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level, settings.log_format)
    conn = connect(settings.redis_url, check=False)
    try:
        wait_for_redis(conn, settings.redis_url)
        check_memory_policy(conn)
    except RedisUnavailable as exc:
        print(f"sentiment-api: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()

    import uvicorn

    from api.app import create_app
    from api.server import GuardedProtocol

    class Protocol(GuardedProtocol):
        header_timeout_s = api_settings.header_timeout_s
        max_connections = api_settings.max_connections

    app = create_app(settings, api_settings)  # no tokens: --insecure-local, checked above
    log.info(
        "api_starting",
        url=f"http://{args.host}:{args.port}/",
        redis_url=redact_url(settings.redis_url),
        tokens=sorted(api_settings.tokens),
        rate_per_minute=api_settings.rate_per_minute,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # uvicorn's loggers go through our structured (scrubbing) logging
        access_log=False,  # the app logs each request itself, without credentials
        server_header=False,
        timeout_graceful_shutdown=10,
        http=Protocol,  # httptools; header deadline and size, connection cap (api.server)
    )
    log.info("api_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
