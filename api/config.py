"""The API's settings, read from the environment (listed in ``.env.example``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from api.uploads import UploadLimits
from shared.config import ConfigError, env_float, env_int
from shared.feedback import Budget
from shared.schema import DEFAULT_TOP_WORDS, MAX_TOP_WORDS

#: The shortest token accepted (a guessable token is no guard).
MIN_TOKEN_CHARS = 16
PLACEHOLDER_TOKENS = {"change-me", "changeme", "token", "secret"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class ApiSettings:
    """The API's settings (tokens never appear in ``repr``)."""

    tokens: dict[str, str] = field(default_factory=dict, repr=False)  # name -> token
    rate_per_minute: int = 120
    feedback_rate_per_minute: int = 20
    timeout_s: float = 20.0
    top_words: int = DEFAULT_TOP_WORDS
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 100 << 20
    #: Token names whose votes speak for their end users (a moderation tool).
    feedback_trusted: frozenset[str] = frozenset()
    feedback_trusted_rate_per_minute: int = 600
    feedback_budget: Budget = field(default_factory=Budget)
    upload: UploadLimits = field(default_factory=UploadLimits)
    #: How long one GET of a batch's results waits for its jobs before answering the rest late.
    results_wait_s: float = 600.0
    #: Batches prepared (read, planned, enqueued) at once; more are refused with 503.
    max_preparing: int = 2
    body_idle_s: float = 30.0
    body_total_s: float = 300.0
    header_timeout_s: float = 10.0
    max_connections: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        """Build from ``env`` (default: ``os.environ``); ConfigError when unusable."""
        env = os.environ if env is None else env
        tokens = parse_tokens(env.get("API_TOKENS", ""))
        trusted = frozenset(
            n for n in env.get("API_FEEDBACK_TRUSTED", "").replace(",", " ").split()
        )
        unknown = sorted(trusted - set(tokens))
        if unknown:
            raise ConfigError(f"API_FEEDBACK_TRUSTED names tokens not in API_TOKENS: {unknown}")
        max_upload = env_int(env, "API_MAX_UPLOAD_BYTES", 100 << 20, minimum=1024)
        return cls(
            tokens=tokens,
            rate_per_minute=env_int(env, "API_RATE_PER_MINUTE", 120, minimum=1),
            feedback_rate_per_minute=env_int(env, "FEEDBACK_RATE_PER_MINUTE", 20, minimum=1),
            timeout_s=float(env_int(env, "API_TIMEOUT_S", 20, minimum=1)),
            top_words=env_int(
                env, "API_TOP_WORDS", DEFAULT_TOP_WORDS, minimum=0, maximum=MAX_TOP_WORDS
            ),
            max_body_bytes=env_int(env, "API_MAX_BODY_BYTES", 1 << 20, minimum=1024),
            max_upload_bytes=max_upload,
            feedback_trusted=trusted,
            feedback_trusted_rate_per_minute=env_int(
                env, "FEEDBACK_TRUSTED_RATE_PER_MINUTE", 600, minimum=1
            ),
            feedback_budget=Budget.from_env(env),
            upload=UploadLimits(
                max_bytes=max_upload,
                max_inflated=env_int(env, "API_MAX_INFLATED_BYTES", 1 << 30, minimum=1024),
                max_ratio=env_int(env, "API_MAX_INFLATION_RATIO", 20, minimum=1),
                max_members=env_int(env, "API_MAX_ARCHIVE_MEMBERS", 200_000, minimum=1),
            ),
            results_wait_s=env_float(env, "API_RESULTS_WAIT_S", 600.0, 1.0, 86400.0),
            max_preparing=env_int(env, "API_MAX_PREPARING", 2, minimum=1),
            body_idle_s=env_float(env, "API_BODY_IDLE_S", 30.0, 0.1, 3600.0),
            body_total_s=env_float(env, "API_BODY_TIMEOUT_S", 300.0, 1.0, 86400.0),
            header_timeout_s=env_float(env, "API_HEADER_TIMEOUT_S", 10.0, 0.1, 600.0),
            max_connections=env_int(env, "API_MAX_CONNECTIONS", 1000, minimum=1),
        )


def parse_tokens(raw: str) -> dict[str, str]:
    """``name=token`` or bare ``token`` items, comma-separated -> {name: token}.

    Several tokens allow rotation (add the new one, move clients, remove the old one); names
    appear in logs and metrics instead of the secrets.
    """
    tokens: dict[str, str] = {}
    for index, item in enumerate(p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, sep, token = item.partition("=")
        if not sep:
            name, token = f"token{index + 1}", item
        name, token = name.strip(), token.strip()
        if not _NAME.match(name):
            raise ConfigError(f"API_TOKENS: token name {name!r} must be 1-64 letters, digits, _.-")
        if token.lower() in PLACEHOLDER_TOKENS or len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"API_TOKENS: token {name!r} is too weak (at least {MIN_TOKEN_CHARS} characters, "
                "not a placeholder; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        if name in tokens:
            raise ConfigError(f"API_TOKENS: token name {name!r} appears twice")
        if token in tokens.values():
            raise ConfigError(f"API_TOKENS: token {name!r} repeats another token")
        tokens[name] = token
    return tokens
