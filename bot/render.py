"""The bot's replies, as Telegram HTML that always parses and always fits one message.

Everything user-provided is escaped; markup is only added around whole escaped pieces, and when a
review must be shortened it is cut *before* escaping, so a cut never lands inside a tag or an
entity.  Lengths are counted like Telegram counts them: in UTF-16 code units.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from shared.highlight import weights_of, word_spans

#: Telegram's limit for a message's text.
MAX_MESSAGE = 4096
EMOJI = {"positive": "👍", "negative": "👎"}
SUPPORT, OPPOSE = ("<b>", "</b>"), ("<u><i>", "</i></u>")
HELP = (
    "🎬 <b>Movie review sentiment</b>\n\n"
    "Send me a movie review and I answer whether it is <b>positive</b> or <b>negative</b>, "
    "how sure the model is, and which words decided it.\n\n"
    "<b>In a private chat</b>: just send the review as a message.\n"
    "<b>In a group</b>: <code>/analyze &lt;review&gt;</code>, or reply to a message with "
    "<code>/analyze</code>.\n\n"
    "Example:\n<code>The acting was wooden and the plot made no sense, "
    "but the soundtrack was lovely.</code>\n\n"
    "/model shows the model that answers, /help shows this message.\n\n"
    "Under each answer, <b>Right</b> / <b>Wrong</b> tell us how the model did. Your review's "
    "text is kept only if you press one of them (to train better models, with your user id "
    "stored as a pseudonym); otherwise it is forgotten within 48 hours."
)
START = "👋 Hi! " + HELP
NOT_TEXT = "🙂 I can only read text: send me a movie review as a message."
EMPTY = "🙂 That message has no review in it: send me a few words about a movie."
ANALYZE_USAGE = (
    "Use <code>/analyze &lt;review&gt;</code>, or reply to a message with <code>/analyze</code>."
)
UNKNOWN_COMMAND = "🤔 I don't know that command. /help shows what I can do."
PLACEHOLDER = "🔎 Analysing your review…"
BUSY = "⏳ All our workers are busy right now; please try again in a minute."
FAILED = "⚠️ Sorry, something went wrong while analysing this review. Please try again."
NOT_ALLOWED = "🔒 Sorry, this bot is private."
IN_FLIGHT = "⏳ I'm still working on your previous review; one at a time, please."


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units: an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Escape user text for Telegram HTML."""
    return html.escape(text, quote=False)


def rate_limited(per_minute: int, retry_in: float) -> str:
    """The polite refusal when a user sends too fast."""
    return (
        f"🐢 You are sending reviews faster than I can read them ({per_minute} per minute). "
        f"Please try again in {max(1, round(retry_in))} s."
    )


FEEDBACK_THANKS = "Thanks! Noted: {label}."
FEEDBACK_EXPIRED = "This answer is too old to rate (answers are kept 48 hours)."
FEEDBACK_FOREIGN = "This button does not belong to this chat."
FEEDBACK_UNKNOWN = "Unknown button."
FEEDBACK_RATE = "Too many votes at once; please try again in a minute."
FEEDBACK_FULL = "Thanks, but no more votes can be kept from you right now."
FEEDBACK_FAILED = "Sorry, your vote could not be saved; please try again."


def model_info(info: Mapping[str, str], decision: Mapping[str, str] | None = None) -> str:
    """The /model answer from a worker's announcement (and the trainer's last decision)."""
    if not info:
        return "No worker has announced a model yet: is a worker running?"
    lines = [f"🧠 Model <b>{escape(info.get('model_version', '?'))}</b>"]
    if decision and decision.get("summary"):
        lines.append(escape(decision["summary"]))
    if info.get("architecture"):
        lines.append(f"Architecture: {escape(info['architecture'])}")
    if info.get("test_accuracy"):
        lines.append(f"Test accuracy: {float(info['test_accuracy']):.2%} (IMDB, 25,000 reviews)")
    if info.get("created"):
        lines.append(f"Trained: {escape(info['created'][:10])}")
    return "\n".join(lines)


def answer(text: str, result: Mapping[str, Any], model_version: str | None) -> str:
    """The reply to a classified review: label, confidence, highlighted review, words, phrases."""
    label = result["label"]
    confidence = float(result["scores"][label])
    weights = weights_of(result.get("top_words") or [])
    head = f"{EMOJI.get(label, '')} <b>{label.capitalize()}</b> · {confidence:.0%} confident"
    if result.get("uncertain"):  # under the version's threshold: a leaning, not a verdict
        head = f"🤷 <b>Mixed / not sure</b>, leaning {label} · {confidence:.0%}"
    tail: list[str] = []
    if weights:
        tail.append(
            "Top words: "
            + ", ".join(f"{'+' if v > 0 else '−'}{escape(w)}" for w, v in list(weights.items())[:8])
        )
    phrases = [str(p) for p, _ in result.get("top_phrases") or []][:3]
    if phrases:
        tail.append("Top phrases: " + ", ".join(f"“{escape(p)}”" for p in phrases))
    tail.append(
        f"{SUPPORT[0]}bold{SUPPORT[1]}: supports the label · "
        f"{OPPOSE[0]}underlined{OPPOSE[1]}: speaks against it"
    )
    if result.get("truncated"):
        tail.append(
            f"ℹ️ A long review ({result.get('n_tokens', '?')} words): the model read its "
            "beginning and its end."
        )
    if model_version:
        tail.append(f"<i>model {escape(model_version)}</i>")
    fixed = head + "\n\n" + "\n\n" + "\n".join(tail)
    shortened_note = "\nℹ️ The review is shortened here to fit one message."
    budget = MAX_MESSAGE - utf16_len(fixed) - utf16_len(shortened_note)
    body, cut = highlight(text, weights, budget)
    return head + "\n\n" + body + "\n\n" + "\n".join(tail) + (shortened_note if cut else "")


def highlight(text: str, weights: Mapping[str, float], budget: int) -> tuple[str, bool]:
    """``text`` escaped, its top words marked; at most ``budget`` UTF-16 units; (html, cut)."""
    pieces: list[tuple[str, tuple[str, str] | None]] = []
    pos = 0
    for span in word_spans(text, weights):
        pieces.append((text[pos : span.start], None))
        pieces.append((text[span.start : span.end], SUPPORT if span.weight > 0 else OPPOSE))
        pos = span.end
    pieces.append((text[pos:], None))
    out: list[str] = []
    used = 0
    ellipsis = "…"
    for raw, style in pieces:
        if not raw:
            continue
        rendered = escape(raw) if style is None else style[0] + escape(raw) + style[1]
        size = utf16_len(rendered)
        if used + size <= budget - 1:
            out.append(rendered)
            used += size
            continue
        if style is None:  # cut plain text before escaping, so no entity is split
            out.append(_fit(raw, budget - 1 - used))
        out.append(ellipsis)
        return "".join(out), True
    return "".join(out), False


def _fit(raw: str, room: int) -> str:
    """The longest prefix of ``raw`` whose escaped form fits ``room`` UTF-16 units."""
    cut = raw[: max(room, 0)]
    while cut and utf16_len(escape(cut)) > room:
        excess = utf16_len(escape(cut)) - room
        cut = cut[: len(cut) - max(1, excess // 6)]
    return escape(cut)
