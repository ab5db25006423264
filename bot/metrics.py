"""The bot's Prometheus metrics (the process's default registry, served on ``METRICS_PORT``).

Updates received by kind, answers by outcome, time from the update to the answer, and the
updates the rate limiter turned away (by reason).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UPDATES = Counter(
    "sentiment_bot_updates",
    "Telegram updates received, by kind (message, edited_message, command, other)",
    ["kind"],
)
ANSWERS = Counter(
    "sentiment_bot_answers",
    "Reviews handled, by outcome (positive, negative, not_english, invalid, timeout, error, "
    "redis_error, "
    "not_allowed, rate_limited)",
    ["outcome"],
)
LATENCY = Histogram(
    "sentiment_bot_answer_seconds",
    "Time from taking a review to editing the answer in (worker outcomes only)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 20, 60),
)
RATE_LIMITED = Counter(
    "sentiment_bot_rate_limited",
    "Reviews refused by the per-user limits, by reason (rate, in_flight)",
    ["reason"],
)
FEEDBACK = Counter(
    "sentiment_bot_feedback",
    "Right / Wrong presses, by outcome (right, wrong, stale, foreign, forged, rate_limited, "
    "invalid, redis_error)",
    ["outcome"],
)
