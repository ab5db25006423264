"""``sentiment-bot`` / ``python -m bot``: the Telegram bot (long polling).

Needs ``TELEGRAM_BOT_TOKEN`` and a Redis with workers (``REDIS_URL``).  ``TELEGRAM_API_URL``
points it at another Bot API server (a self-hosted one, or the fake one in the tests).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import structlog

from bot.config import BotSettings
from shared.cli import command_parser
from shared.config import ConfigError, settings_or_exit
from shared.log import configure_logging, register_secret, scrub
from shared.queues import RedisUnavailable, check_memory_policy, redact_url, wait_for_redis

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    command_parser("sentiment-bot", __doc__, whole=True).parse_args(argv)
    settings = settings_or_exit("sentiment-bot")
    try:
        bot_settings = BotSettings.from_env()
    except ConfigError as exc:
        print(f"sentiment-bot: {exc}", file=sys.stderr)
        return 2
    register_secret(bot_settings.token)
    configure_logging(settings.log_level, settings.log_format)

    from telegram import Update
    from telegram.error import InvalidToken

    from bot.app import build_application
    from shared.aqueue import AsyncQueueClient

    client = AsyncQueueClient(
        settings.redis_url,
        job_timeout=settings.job_timeout,
        result_ttl=settings.interactive_result_ttl,
        failure_ttl=settings.interactive_result_ttl,
    )
    try:
        wait_for_redis(client.conn, settings.redis_url)
        check_memory_policy(client.conn)
    except RedisUnavailable as exc:
        print(f"sentiment-bot: {exc}", file=sys.stderr)
        return 2
    app = build_application(bot_settings, client)
    if settings.metrics_port:
        from shared.metrics import serve

        try:
            serve(settings.metrics_port, settings.metrics_addr)
        except ConfigError as exc:
            print(f"sentiment-bot: {exc}", file=sys.stderr)
            return 2
    log.info(
        "bot_starting",
        api_url=bot_settings.api_url,
        redis_url=redact_url(settings.redis_url),
        rate_per_minute=bot_settings.rate_per_minute,
        allowlist=len(bot_settings.allowed_users),
    )
    try:
        app.run_polling(allowed_updates=Update.ALL_TYPES, close_loop=False)
    except InvalidToken:
        # python-telegram-bot puts the token in this error's message: never print it.
        log.error("bot_token_rejected", api_url=bot_settings.api_url)
        print(
            "sentiment-bot: the Bot API server rejected TELEGRAM_BOT_TOKEN (revoked, or mistyped?)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # every other exit path goes through the scrubbing logger too
        log.exception("bot_failed")
        print(f"sentiment-bot: stopped: {scrub(str(exc))}", file=sys.stderr)
        return 1
    log.info("bot_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
