"""The Telegram application: handlers, limits and the reply flow.

Private chat: any text is a review.  Groups: ``/analyze <text>`` or ``/analyze`` in reply to a
message.  Edited messages are re-analysed (a fixed typo deserves a fresh answer), consistently
everywhere.  Updates are processed concurrently, so one user's slow review never holds up
another's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from redis.exceptions import RedisError
from telegram import (
    BotCommand,
    Chat,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.constants import ChatAction, ChatType, MessageEntityType, ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import metrics, render, votes
from bot.config import BotSettings
from bot.limits import UserLimits
from shared import announcements
from shared.aqueue import AsyncQueueClient, Ticket
from shared.ratelimit import AsyncLimiter, Limiter
from shared.schema import review_error

log = structlog.get_logger(__name__)

COMMANDS = [
    BotCommand("start", "What this bot does"),
    BotCommand("help", "How to use it, with an example"),
    BotCommand("analyze", "Analyse a review (or reply to one with /analyze)"),
    BotCommand("model", "The model that answers"),
]
#: Updates handled at the same time (each mostly waits on Redis or Telegram).
CONCURRENT_UPDATES = 256


class SentimentBot:
    """Handler callbacks sharing the settings, the queue client and the rate limiter."""

    def __init__(self, settings: BotSettings, client: AsyncQueueClient) -> None:
        self.settings = settings
        self.client = client
        self.limiter = UserLimits(AsyncLimiter(client.aconn), settings.rate_per_minute)
        self.vote_limiter = Limiter(client.conn)

    # -- gate -------------------------------------------------------------------------------
    async def gate(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Runs before every handler: the allowlist, when one is configured."""
        if isinstance(update, Update):
            metrics.UPDATES.labels(_update_kind(update)).inc()
        if not isinstance(update, Update) or not self.settings.allowed_users:
            return
        user = update.effective_user
        if user is not None and user.id in self.settings.allowed_users:
            return
        log.info("update_refused", update_id=update.update_id, reason="not_allowed")
        metrics.ANSWERS.labels("not_allowed").inc()
        if update.callback_query is not None:  # a button press: answered, never stored
            await update.callback_query.answer(render.NOT_ALLOWED)
            raise ApplicationHandlerStop
        chat, message = update.effective_chat, update.effective_message
        if chat is not None and chat.type == ChatType.PRIVATE and message is not None:
            await message.reply_text(render.NOT_ALLOWED, do_quote=True)
        raise ApplicationHandlerStop

    # -- commands ---------------------------------------------------------------------------
    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answer /start with the welcome and usage."""
        await self._reply(update, render.START)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answer /help with usage and an example."""
        await self._reply(update, render.HELP)

    async def model(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answer /model with the version the workers announce and the trainer's decision."""
        decision: dict[str, str] = {}
        try:
            info = await self.client.served_model()
            decision = await asyncio.to_thread(announcements.last_decision, self.client.conn)
        except RedisError as exc:
            log.error("model_info_failed", update_id=update.update_id, reason=str(exc))
            info = {}
        await self._reply(update, render.model_info(info, decision))

    async def analyze(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Analyse the text after /analyze, or the message it replies to."""
        message = update.effective_message
        assert message is not None
        text = _after_command(message)
        if not text.strip() and message.reply_to_message is not None:
            replied = message.reply_to_message
            text = replied.text or replied.caption or ""
            if not text.strip():
                await self._reply(update, render.NOT_TEXT)
                return
        if not text.strip():
            await self._reply(update, render.ANALYZE_USAGE)
            return
        await self.classify(update, text)

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command we don't have; commands addressed to another bot are not ours to answer."""
        message = update.effective_message
        assert message is not None
        command = (message.text or "").split(maxsplit=1)[0]
        target = command.partition("@")[2]
        if target and target.lower() != (context.bot.username or "").lower():
            log.info("update_ignored", update_id=update.update_id, reason="other_bot")
            return
        await self._reply(update, render.UNKNOWN_COMMAND)

    # -- messages ---------------------------------------------------------------------------
    async def review(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A text message in a private chat: analyse it as a review."""
        message = update.effective_message
        assert message is not None
        await self.classify(update, message.text or "")

    async def not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo, sticker, voice note...: say that only text is read."""
        log.info("update_not_text", update_id=update.update_id)
        await self._reply(update, render.NOT_TEXT)

    # -- the flow ---------------------------------------------------------------------------
    async def classify(self, update: Update, text: str) -> None:
        """Typing, placeholder, enqueue, await the worker, edit the placeholder into the answer."""
        started = time.monotonic()
        message, chat, user = update.effective_message, update.effective_chat, update.effective_user
        assert message is not None and chat is not None
        user_id = user.id if user is not None else chat.id
        fields: dict[str, Any] = {"update_id": update.update_id, "chat_id": chat.id}
        error = review_error(text)
        if error is not None:
            log.info("update_invalid", **fields, reason=error)
            metrics.ANSWERS.labels("invalid").inc()
            await self._reply(update, render.EMPTY if not text.strip() else render.escape(error))
            return
        decision = await self.limiter.acquire(user_id)
        if not decision.allowed:
            log.info("update_rate_limited", **fields, reason=decision.reason)
            metrics.RATE_LIMITED.labels(decision.reason or "rate").inc()
            metrics.ANSWERS.labels("rate_limited").inc()
            if decision.notify:
                await self._reply(
                    update,
                    render.IN_FLIGHT
                    if decision.reason == "in_flight"
                    else render.rate_limited(self.settings.rate_per_minute, decision.retry_in),
                )
            return
        outcome_name, ticket, version = "error", None, None
        placeholder: Message | None = None
        typing = asyncio.ensure_future(self._typing(chat))
        try:
            sent, submitted = await asyncio.gather(
                message.reply_text(render.PLACEHOLDER, do_quote=True),
                self.client.submit(
                    f"tg-{update.update_id}", text, self.settings.top_words, sentences=True
                ),
                return_exceptions=True,
            )
            if isinstance(sent, BaseException):
                raise sent
            placeholder = sent
            if isinstance(submitted, BaseException):
                raise submitted
            ticket = submitted
            outcome = await self.client.wait(ticket.job_id, self.settings.reply_timeout_s)
            self.limiter.release(user_id)  # answered: the next review may come before the edit
            if outcome is None:
                outcome_name = "timeout"
                await self._edit(placeholder, render.BUSY)
                await self.client.cancel(ticket)
            elif outcome.result is None:
                log.error("job_failed", **fields, job_id=ticket.job_id, reason=outcome.error)
                await self._edit(placeholder, render.FAILED)
            else:
                version = outcome.result["model_version"]
                answer = outcome.result["results"][0]
                if answer.get("error"):
                    await self._edit(placeholder, render.escape(str(answer["error"])))
                    outcome_name = "invalid"
                elif answer.get("language", render.ENGLISH) != render.ENGLISH:
                    # The model reads English: no label, no buttons to vote on one.
                    await self._edit(placeholder, render.english_only(answer["language"]))
                    outcome_name = "not_english"
                else:
                    keyboard = await self._feedback_buttons(text, answer["label"], version, chat.id)
                    await self._edit(placeholder, render.answer(text, answer, version), keyboard)
                    outcome_name = answer["label"]
        except RedisError as exc:
            # Redis went away while we enqueued or waited: say so, and drop the job (best
            # effort: Redis may still be away; the job's text then expires with its result).
            outcome_name = "redis_error"
            log.error("redis_failed", **fields, job_id=_job_id(ticket), reason=str(exc))
            if placeholder is not None:
                await self._edit_quietly(placeholder, render.BUSY)
            if ticket is not None:
                self.client.cancel_later(ticket)
        except TelegramError as exc:
            log.error("update_failed", **fields, job_id=_job_id(ticket), reason=str(exc))
        finally:
            self.limiter.release(user_id)
            await asyncio.gather(typing, return_exceptions=True)
            metrics.ANSWERS.labels(outcome_name).inc()
            metrics.LATENCY.observe(time.monotonic() - started)
            log.info(
                "update_answered",
                **fields,
                job_id=_job_id(ticket),
                outcome=outcome_name,
                model_version=version,
                chars=len(text),
                latency_ms=round(1000 * (time.monotonic() - started), 1),
            )

    @staticmethod
    async def _typing(chat: Chat) -> None:
        try:
            await chat.send_action(ChatAction.TYPING)
        except TelegramError as exc:  # cosmetic: never fails the answer
            log.debug("chat_action_failed", reason=str(exc))

    async def _reply(self, update: Update, text: str) -> None:
        message = update.effective_message
        if message is not None:
            await message.reply_text(text, parse_mode=ParseMode.HTML, do_quote=True)

    async def _edit_quietly(self, placeholder: Message, text: str) -> None:
        """Edit, logging (not raising) a Telegram error: we are already handling one."""
        try:
            await self._edit(placeholder, text)
        except TelegramError as exc:
            log.error("edit_failed", reason=str(exc))

    async def _feedback_buttons(
        self, text: str, label: str, version: str, chat_id: int
    ) -> InlineKeyboardMarkup | None:
        return await votes.buttons(self.client.conn, text, label, version, chat_id)

    async def vote(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A Right / Wrong press (``bot.votes``): stored, or answered and ignored."""
        query = update.callback_query
        assert query is not None
        reply, outcome = await votes.vote(
            query,
            self.client.conn,
            self.vote_limiter,
            self.settings.feedback_rate_per_minute,
            self.settings.feedback_budget,
        )
        metrics.FEEDBACK.labels(outcome).inc()
        log.info("feedback", update_id=update.update_id, outcome=outcome)
        try:
            await query.answer(reply)
        except TelegramError as exc:  # the query expired: the vote is stored anyway
            log.warning("callback_answer_failed", reason=str(exc))

    async def _edit(
        self, placeholder: Message, text: str, keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        try:
            await placeholder.edit_text(text, parse_mode=ParseMode.HTML, reply_markup=keyboard)
        except BadRequest as exc:  # should not happen; never leave the placeholder hanging
            log.error("edit_rejected", reason=str(exc), chars=len(text))
            await placeholder.edit_text(render.FAILED)

    async def error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log an error no handler caught (the update is dropped, never retried)."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("handler_error", update_id=update_id, reason=repr(context.error))


def _job_id(ticket: Ticket | None) -> str | None:
    return ticket.job_id if ticket is not None else None


def _update_kind(update: Update) -> str:
    """A bounded label for an update (``sentiment_bot_updates``)."""
    if update.edited_message is not None:
        return "edited_message"
    message = update.message
    if update.callback_query is not None:
        return "callback_query"
    if message is None:
        return "other"
    if message.text and message.text.startswith("/"):
        return "command"
    return "message" if message.text else "not_text"


def _after_command(message: Message) -> str:
    """The text after the leading /command (keeps the user's line breaks)."""
    text = message.text or message.caption or ""
    for entity in message.entities or ():
        if entity.type == MessageEntityType.BOT_COMMAND and entity.offset == 0:
            return text[entity.length :].strip()
    return text.partition(" ")[2].strip()


AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def build_application(settings: BotSettings, client: AsyncQueueClient) -> AnyApplication:
    """The python-telegram-bot Application, ready for ``run_polling()``."""
    bot = SentimentBot(settings, client)

    async def post_init(app: AnyApplication) -> None:
        """Register the command menu once the bot is up."""
        await app.bot.set_my_commands(COMMANDS)

    async def post_shutdown(app: AnyApplication) -> None:
        """Close the Redis connections on the way out."""
        await client.close()

    app = (
        ApplicationBuilder()
        .token(settings.token)
        .base_url(settings.base_url)
        .base_file_url(settings.base_file_url)
        .concurrent_updates(CONCURRENT_UPDATES)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    private = filters.ChatType.PRIVATE
    app.add_handler(TypeHandler(Update, bot.gate), group=-1)
    app.add_handler(CommandHandler("start", bot.start))
    app.add_handler(CommandHandler("help", bot.help))
    app.add_handler(CommandHandler("model", bot.model))
    app.add_handler(CommandHandler("analyze", bot.analyze))
    app.add_handler(CallbackQueryHandler(bot.vote))
    app.add_handler(MessageHandler(private & filters.COMMAND, bot.unknown))
    app.add_handler(MessageHandler(private & filters.TEXT & ~filters.COMMAND, bot.review))
    app.add_handler(
        MessageHandler(private & ~filters.TEXT & ~filters.StatusUpdate.ALL, bot.not_text)
    )
    app.add_error_handler(bot.error)
    return app
