"""The bot's settings, read from the environment (listed in ``.env.example``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.config import ConfigError, env_int
from shared.feedback import Budget, salt_is_set
from shared.schema import DEFAULT_TOP_WORDS, MAX_TOP_WORDS

DEFAULT_API_URL = "https://api.telegram.org"
#: What BotFather hands out: "<bot id>:<35 characters>".
TOKEN_FORMAT = re.compile(r"^\d{5,}:[A-Za-z0-9_-]{30,}$")


@dataclass(frozen=True)
class BotSettings:
    """The bot's settings (the token never appears in ``repr``)."""

    token: str
    api_url: str = DEFAULT_API_URL
    rate_per_minute: int = 10
    allowed_users: frozenset[int] = frozenset()  # empty: everyone
    reply_timeout_s: float = 20.0
    top_words: int = DEFAULT_TOP_WORDS
    feedback_rate_per_minute: int = 20
    feedback_budget: Budget = field(default_factory=Budget)

    def __repr__(self) -> str:  # never print the token
        return (
            f"BotSettings(api_url={self.api_url!r}, rate_per_minute={self.rate_per_minute}, "
            f"allowed_users={sorted(self.allowed_users)}, reply_timeout_s={self.reply_timeout_s})"
        )

    @property
    def base_url(self) -> str:
        """What python-telegram-bot's ``base_url`` expects: ``{api}/bot`` (token appended)."""
        return self.api_url.rstrip("/") + "/bot"

    @property
    def base_file_url(self) -> str:
        """What python-telegram-bot's ``base_file_url`` expects."""
        return self.api_url.rstrip("/") + "/file/bot"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Build from ``env`` (default: ``os.environ``); ConfigError when unusable."""
        env = os.environ if env is None else env
        token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
        if not token:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and put its token "
                "in the environment (see .env.example)"
            )
        if not TOKEN_FORMAT.match(token):
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN does not look like a bot token (expected '<digits>:<secret>' "
                "from @BotFather); is it still the placeholder from .env.example?"
            )
        api_url = env.get("TELEGRAM_API_URL", "").strip() or DEFAULT_API_URL
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"TELEGRAM_API_URL must be an http(s) URL, got {api_url!r}")
        raw_users = env.get("BOT_ALLOWED_USERS", "").replace(",", " ").split()
        try:
            allowed = frozenset(int(u) for u in raw_users)
        except ValueError as exc:
            raise ConfigError(
                f"BOT_ALLOWED_USERS must be Telegram user ids separated by commas, got {raw_users}"
            ) from exc
        if not salt_is_set(env):
            raise ConfigError(
                "FEEDBACK_SALT is not set: the bot keeps votes under keyed pseudonyms of Telegram "
                "ids, which are short numbers anyone could try; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
            )
        return cls(
            token=token,
            api_url=api_url,
            rate_per_minute=env_int(env, "BOT_RATE_PER_MINUTE", 10, minimum=1),
            allowed_users=allowed,
            reply_timeout_s=float(env_int(env, "BOT_TIMEOUT_S", 20, minimum=1)),
            top_words=env_int(
                env, "BOT_TOP_WORDS", DEFAULT_TOP_WORDS, minimum=1, maximum=MAX_TOP_WORDS
            ),
            feedback_rate_per_minute=env_int(env, "FEEDBACK_RATE_PER_MINUTE", 20, minimum=1),
            feedback_budget=Budget.from_env(env),
        )
