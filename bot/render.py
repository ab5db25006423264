"""The bot's replies, as Telegram HTML that always parses and always fits one message.

Everything user-provided is escaped; markup is only added around whole escaped pieces, and when a
review must be shortened it is cut *before* escaping, so a cut never lands inside a tag or an
entity.  Lengths are counted like Telegram counts them: in UTF-16 code units.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from shared.highlight import Span, word_spans

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


VERDICT_HEAD = {
    "mixed": "⚖️ <b>Mixed</b>",
    "neutral": "😐 <b>Neutral</b>: no clear opinion",
}
SENTENCE_MARK = {"positive": "👍", "negative": "👎", None: "😐"}


def _words(reasons: Any) -> str:
    return ", ".join(escape(str(w)) for w in list(reasons or [])[:4])


ENGLISH = "en"
#: "I read English only", in the language a review came in (where we can say it).
ENGLISH_ONLY = {
    "en": "I read English only: please send your review in English.",
    "de": "Ich lese nur Englisch: bitte schicken Sie Ihre Bewertung auf Englisch.",
    "fr": "Je ne lis que l'anglais : merci d'envoyer votre avis en anglais.",
    "es": "Solo leo inglés: por favor, envía tu reseña en inglés.",
    "it": "Leggo solo l'inglese: per favore, invia la tua recensione in inglese.",
    "pt": "Só leio inglês: por favor, envie a sua avaliação em inglês.",
    "nl": "Ik lees alleen Engels: stuur je recensie alsjeblieft in het Engels.",
    "sv": "Jag läser bara engelska: skicka gärna din recension på engelska.",
    "pl": "Czytam tylko po angielsku: proszę wysłać recenzję po angielsku.",
    "tr": "Yalnızca İngilizce okuyorum: lütfen yorumunuzu İngilizce gönderin.",
    "ru": "Я читаю только по-английски: пожалуйста, пришлите отзыв на английском.",
    "uk": "Я читаю лише англійською: будь ласка, надішліть відгук англійською.",
    "zh": "我只能读英文：请用英文发送您的评论。",
    "ja": "英語しか読めません。レビューを英語で送ってください。",
    "ko": "영어만 읽을 수 있습니다. 리뷰를 영어로 보내 주세요.",
    "ar": "أقرأ الإنجليزية فقط: يرجى إرسال مراجعتك باللغة الإنجليزية.",
}


def english_only(language: str) -> str:
    """The reply to a review in another language: in it where we can, with English beside."""
    own = ENGLISH_ONLY.get(language)
    english = ENGLISH_ONLY[ENGLISH]
    head = f"🌐 <b>{escape(language)}</b>"
    return f"{head}: {escape(own)}\n{escape(english)}" if own else f"{head}: {escape(english)}"


def answer(text: str, result: Mapping[str, Any], model_version: str | None) -> str:
    """The reply to a classified review: the verdict, the review with each sentence marked and
    its reasons in bold, and the reasons; the data's every weight stays in the result."""
    label = result["label"]
    confidence = float(result["scores"][label])
    verdict = result.get("verdict", label)
    sentences = list(result.get("sentences") or [])
    top = [(str(w), float(v)) for w, v in result.get("top_words") or []]
    # Results of older workers carry no reasons: their top words by sign stand in.
    reasons = list(result.get("reasons", [w for w, v in top if v > 0][:4]))
    against = list(result.get("against", [w for w, v in top if v < 0][:2]))
    if verdict == "mixed":
        # What each side is about ("acting, music"), else the words that carried it.
        about = result.get("about") or {}
        sides = {
            side: list(about.get(side) or [])
            or [
                w
                for s in sentences
                if s["label"] == side and not s["uncertain"]
                for w in s.get("reasons") or []
            ]
            for side in ("positive", "negative")
        }
        head = (
            f"{VERDICT_HEAD['mixed']}: 👍 {_words(dict.fromkeys(sides['positive'])) or '…'}"
            f" · 👎 {_words(dict.fromkeys(sides['negative'])) or '…'}"
            f" (leaning {label})"
        )
    elif verdict == "neutral":
        head = f"{VERDICT_HEAD['neutral']} (leaning {label}, {confidence:.0%})"
    elif result.get("uncertain"):  # under the version's threshold: a leaning, not a verdict
        head = f"🤷 <b>Not sure</b>, leaning {label} · {confidence:.0%}"
    else:
        head = f"{EMOJI.get(label, '')} <b>{label.capitalize()}</b> · {confidence:.0%} confident"
    spans: list[Span] = []
    marks: dict[int, str] = {}
    if len(sentences) > 1:
        for s in sentences:
            start, end = int(s["start"]), int(s["end"])
            marks[start] = SENTENCE_MARK[None if s["uncertain"] else s["label"]] + " "
            weights = {str(w): 1.0 for w in s.get("reasons") or []}
            spans += [
                Span(start + w.start, start + w.end, w.weight)
                for w in word_spans(text[start:end], weights)
            ]
    elif verdict != "neutral":
        spans = word_spans(text, {**{w: -1.0 for w in against}, **{w: 1.0 for w in reasons}})
    tail: list[str] = []
    if reasons and verdict in ("positive", "negative"):
        tail.append("Why: " + _words(reasons))
    phrases = [str(p) for p, _ in result.get("top_phrases") or []][:3]
    if phrases and verdict in ("positive", "negative"):
        tail.append("Top phrases: " + ", ".join(f"“{escape(p)}”" for p in phrases))
    if spans:
        legend = f"{SUPPORT[0]}bold{SUPPORT[1]}: the words that decided"
        if any(s.weight < 0 for s in spans):
            legend += f" · {OPPOSE[0]}underlined{OPPOSE[1]}: speaks against it"
        tail.append(legend)
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
    body, cut = highlight_spans(text, spans, marks, budget)
    return head + "\n\n" + body + "\n\n" + "\n".join(tail) + (shortened_note if cut else "")


def highlight(text: str, weights: Mapping[str, float], budget: int) -> tuple[str, bool]:
    """``text`` escaped, its top words marked; at most ``budget`` UTF-16 units; (html, cut)."""
    return highlight_spans(text, word_spans(text, weights), {}, budget)


def highlight_spans(
    text: str, spans: Sequence[Span], marks: Mapping[int, str], budget: int
) -> tuple[str, bool]:
    """``text`` escaped with ``spans`` styled (bold: weight > 0, else underlined) and each
    ``marks[offset]`` put before that offset; at most ``budget`` UTF-16 units; (html, cut)."""
    pieces: list[tuple[str, tuple[str, str] | None]] = []
    cuts = sorted({0, len(text), *marks, *(s.start for s in spans), *(s.end for s in spans)})
    styled = {s.start: s for s in spans}
    for a, b in itertools.pairwise(cuts):
        if a in marks:
            pieces.append((marks[a], ("", "")))
        span = styled.get(a)
        if span is not None and span.end == b:
            pieces.append((text[a:b], SUPPORT if span.weight > 0 else OPPOSE))
        else:
            pieces.append((text[a:b], None))
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
