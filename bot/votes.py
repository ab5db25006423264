"""The Right / Wrong buttons under an answer, and what a press does (``shared.feedback``).

An answer is kept ``feedback.ANSWER_TTL_S`` for its buttons, whose data names it by a random
token.  A press stores one vote per user and answer (a later press replaces it); the voter is the
Telegram user who pressed, never anything the message carries.  Forged data, an expired answer,
a press from another chat, a flood (``FEEDBACK_RATE_PER_MINUTE``) and a voter over their storage
budget are answered and ignored.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from redis import Redis
from redis.exceptions import RedisError
from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup

from bot import render
from shared import feedback
from shared.ratelimit import Limiter

log = structlog.get_logger(__name__)


async def buttons(
    conn: Redis, text: str, label: str, version: str, chat_id: int
) -> InlineKeyboardMarkup | None:
    """Right / Wrong for an answer (no buttons, rather than no answer, when Redis refuses)."""
    try:
        token = await asyncio.to_thread(
            feedback.remember_answer, conn, text, label, version, chat_id
        )
    except RedisError as exc:
        log.warning("answer_not_kept", reason=str(exc))
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Right", callback_data=f"fb:{token}:r"),
                InlineKeyboardButton("❌ Wrong", callback_data=f"fb:{token}:w"),
            ]
        ]
    )


async def vote(
    query: CallbackQuery,
    conn: Redis,
    limiter: Limiter,
    per_minute: int,
    budget: feedback.Budget,
) -> tuple[str, str]:
    """Store a press; returns (the callback answer, the outcome for logs and metrics)."""
    parts = (query.data or "").split(":")
    if len(parts) != 3 or parts[0] != "fb" or parts[2] not in ("r", "w"):
        return render.FEEDBACK_UNKNOWN, "forged"
    _, token, choice = parts
    try:
        answer = await asyncio.to_thread(feedback.answer_of, conn, token)
        if answer is None:
            return render.FEEDBACK_EXPIRED, "stale"
        message = query.message
        if message is None or message.chat.id != answer["chat_id"]:
            return render.FEEDBACK_FOREIGN, "foreign"
        user = feedback.hash_user(f"tg:{query.from_user.id}")
        label = answer["label"] if choice == "r" else feedback.other_label(answer["label"])
        item = feedback.Feedback(
            text=answer["text"],
            label=label,
            predicted=answer["label"],
            model_version=answer["model_version"],
            user=user,
            message=f"tg:{token}",
            source="bot",
            at=time.time(),
        )
        await asyncio.to_thread(feedback.allow, limiter, user, per_minute)
        await asyncio.to_thread(feedback.record, conn, item, budget)
    except feedback.RateLimited:
        return render.FEEDBACK_RATE, "rate_limited"
    except feedback.BudgetExceeded:
        return render.FEEDBACK_FULL, "budget"
    except feedback.FeedbackError:
        return render.FEEDBACK_UNKNOWN, "invalid"
    except RedisError as exc:
        log.error("feedback_not_saved", reason=str(exc))
        return render.FEEDBACK_FAILED, "redis_error"
    return render.FEEDBACK_THANKS.format(label=label), "right" if choice == "r" else "wrong"
