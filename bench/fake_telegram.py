"""A fake Telegram Bot API server on 127.0.0.1, as strict as Telegram where our bot could slip.

python-telegram-bot talks to it through ``base_url`` exactly as it talks to api.telegram.org:
``POST /bot<token>/<method>`` with form-encoded parameters.  It answers getMe, deleteWebhook,
getUpdates (long polling), sendMessage, editMessageText, sendChatAction, setMyCommands, and
rejects, like Telegram does: an empty text, a text over 4,096 UTF-16 units after entity parsing,
HTML that is malformed or uses unsupported tags, a bare ``&`` or ``<``, an edit that changes
nothing, an unknown message, a wrong token.  Tests push updates and read every call back.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

BOT_ID = 424242
BOT_USERNAME = "sentiment_test_bot"
TOKEN = f"{BOT_ID}:AAFakeTokenForTestsOnly_abcdefghijklmnop"
ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a",
    "tg-spoiler", "span", "blockquote", "tg-emoji",
}  # fmt: skip
_PIECE = re.compile(r"<[^<>]*>|&[^&<>;\s]*;?|[^<&]+|[<&]")
_TAG = re.compile(r"<(/?)([a-z-]+)(\s[^<>]*)?>$")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);$")


class ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> str:
    """The visible text of Telegram HTML; ApiError(400) where Telegram would refuse it."""
    out: list[str] = []
    stack: list[str] = []
    for match in _PIECE.finditer(text):
        piece = match.group()
        offset = len(text[: match.start()].encode())
        if piece.startswith("<"):
            tag = _TAG.match(piece)
            if tag is None:
                raise ApiError(
                    400, f"Bad Request: can't parse entities: unexpected '<' at byte {offset}"
                )
            closing, name = tag.group(1), tag.group(2)
            if name not in ALLOWED_TAGS:
                raise ApiError(
                    400,
                    f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" at byte '
                    f"offset {offset}",
                )
            if closing:
                if not stack or stack[-1] != name:
                    raise ApiError(
                        400,
                        f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                        f'{offset}, expected "</{stack[-1] if stack else ""}>", found "</{name}>"',
                    )
                stack.pop()
            else:
                stack.append(name)
        elif piece.startswith("&"):
            if not _ENTITY.match(piece):
                raise ApiError(
                    400,
                    "Bad Request: can't parse entities: Character '&' is reserved and must be "
                    f"escaped at byte offset {offset}",
                )
            out.append(html.unescape(piece))
        else:
            out.append(piece)
    if stack:
        raise ApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to "
            f'"{stack[-1]}"',
        )
    return "".join(out)


def check_text(text: str | None, parse_mode: str | None) -> str:
    if text is None or not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    visible = parse_html(text) if (parse_mode or "").upper() == "HTML" else text
    if not visible.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if utf16_len(visible) > 4096:
        raise ApiError(400, "Bad Request: message is too long")
    return visible


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    ok: bool = True
    error: str | None = None


@dataclass
class FakeTelegram:
    """State of the fake server; thread-safe (the HTTP server is threaded)."""

    token: str = TOKEN
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    served_at: dict[int, float] = field(default_factory=dict)  # update_id -> first getUpdates
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    callback_answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Seconds between recording an edit and answering it (a slow network, in tests).
    edit_delay_s: float = 0.0
    _next_update: int = 1
    _next_message: int = 1000
    _lock: threading.Condition = field(default_factory=threading.Condition)

    # -- building updates -------------------------------------------------------------------
    def push(self, kind: str, message: dict[str, Any]) -> int:
        with self._lock:
            update_id = self._next_update
            self._next_update += 1
            self.updates.append({"update_id": update_id, kind: message})
            self._lock.notify_all()
            return update_id

    def new_message_id(self) -> int:
        with self._lock:
            self._next_message += 1
            return self._next_message

    def message(
        self,
        user_id: int,
        text: str | None = None,
        chat_type: str = "private",
        chat_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        message_id: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        chat_id = chat_id if chat_id is not None else user_id
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"user{user_id}"
        else:
            chat["title"] = "movie club"
        msg: dict[str, Any] = {
            "message_id": message_id or self.new_message_id(),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            **extra,
        }
        if text is not None:
            msg["text"] = text
            command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
            if command:
                msg["entities"] = [
                    {"type": "bot_command", "offset": 0, "length": utf16_len(command.group())}
                ]
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        return msg

    def send_text(self, user_id: int, text: str, **kwargs: Any) -> int:
        return self.push("message", self.message(user_id, text, **kwargs))

    def send_sticker(self, user_id: int) -> int:
        sticker = {
            "file_id": "sticker1",
            "file_unique_id": "s1",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "😀",
        }
        return self.push("message", self.message(user_id, sticker=sticker))

    def press(self, user_id: int, message: dict[str, Any], data: str) -> str:
        """A user presses an inline button of a bot message; returns the callback query id."""
        with self._lock:
            self._next_message += 1
            query_id = f"cb{self._next_message}"
        bot_message = {
            k: v for k, v in message.items() if k not in ("reply_to", "edits", "sent_at")
        }
        self.push(
            "callback_query",
            {
                "id": query_id,
                "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
                "message": bot_message,
                "chat_instance": f"ci{bot_message['chat']['id']}",
                "data": data,
            },
        )
        return query_id

    def buttons(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The inline buttons under a bot message (current state)."""
        markup = message.get("reply_markup") or {}
        return [b for row in markup.get("inline_keyboard", []) for b in row]

    # -- reading calls ----------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def replies_to(self, message_id: int) -> list[dict[str, Any]]:
        """Messages the bot sent in reply to ``message_id``, with their current (edited) text."""
        with self._lock:
            return [m for m in self.messages.values() if m.get("reply_to") == message_id]

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> Any:
        """Wait until ``predicate()`` is truthy; return its value (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(
            f"timed out after {timeout} s; calls: {[c.method for c in self.calls][-20:]}"
        )

    # -- the API ----------------------------------------------------------------------------
    def handle(self, method: str, params: dict[str, Any]) -> Any:
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            raise ApiError(404, "Not Found")
        return handler(params)

    def api_getMe(self, params: dict[str, Any]) -> Any:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Sentiment",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    def api_setMyCommands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or not commands:
            raise ApiError(400, "Bad Request: commands must be a non-empty list")
        return True

    def api_sendChatAction(self, params: dict[str, Any]) -> Any:
        if params.get("action") not in ("typing", "upload_photo", "record_voice"):
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    def api_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = min(float(params.get("timeout") or 0), 2.0)
        deadline = time.monotonic() + timeout
        with self._lock:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates and (remaining := deadline - time.monotonic()) > 0:
                self._lock.wait(remaining)
            batch = self.updates[:limit]
            now = time.monotonic()
            for update in batch:
                self.served_at.setdefault(update["update_id"], now)
            return batch

    def api_sendMessage(self, params: dict[str, Any]) -> Any:
        check_text(params.get("text"), params.get("parse_mode"))
        chat_id = int(params["chat_id"])
        reply = params.get("reply_parameters") or {}
        message_id = self.new_message_id()
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": self.api_getMe({}),
            "text": params["text"],
        }
        if params.get("reply_markup"):
            message["reply_markup"] = _markup(params["reply_markup"])
        with self._lock:
            self.messages[(chat_id, message_id)] = {
                **message,
                "reply_to": reply.get("message_id"),
                "edits": [],
                "sent_at": time.monotonic(),
            }
        return message

    def api_editMessageText(self, params: dict[str, Any]) -> Any:
        check_text(params.get("text"), params.get("parse_mode"))
        key = (int(params["chat_id"]), int(params["message_id"]))
        with self._lock:
            stored = self.messages.get(key)
            if stored is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            if stored["text"] == params["text"]:
                raise ApiError(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content and reply markup of "
                    "the message",
                )
            stored["text"] = params["text"]
            if params.get("reply_markup"):
                stored["reply_markup"] = _markup(params["reply_markup"])
            else:
                stored.pop("reply_markup", None)
            stored["edits"].append((time.monotonic(), params["text"]))
            edited = {k: v for k, v in stored.items() if k not in ("reply_to", "edits", "sent_at")}
        if self.edit_delay_s:  # the user already sees the edit; the bot hears back later
            time.sleep(self.edit_delay_s)
        return edited

    def api_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        query_id = str(params.get("callback_query_id") or "")
        if not query_id:
            raise ApiError(400, "Bad Request: query_id_invalid")
        with self._lock:
            if query_id in self.callback_answers:
                raise ApiError(400, "Bad Request: query is too old or query ID is invalid")
            self.callback_answers[query_id] = {"text": params.get("text"), "at": time.monotonic()}
            self._lock.notify_all()
        return True


def _markup(raw: Any) -> dict[str, Any]:
    """An inline keyboard as the Bot API receives it (a JSON string in form posts)."""
    markup = json.loads(raw) if isinstance(raw, str) else raw
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data", "")
            if len(data.encode()) > 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return dict(markup)


def _decode(raw: bytes, content_type: str) -> dict[str, Any]:
    """PTB sends form fields: strings raw, other values as JSON."""
    if "json" in content_type:
        return dict(json.loads(raw or b"{}"))
    params: dict[str, Any] = {}
    for key, value in parse_qsl(raw.decode(), keep_blank_values=True):
        if key in ("text", "parse_mode", "action"):
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


class FakeTelegramServer:
    """``with FakeTelegramServer() as fake: ...`` -> ``fake.url`` for TELEGRAM_API_URL."""

    def __init__(self, state: FakeTelegram | None = None) -> None:
        self.state = state or FakeTelegram()
        state_ = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                match = re.fullmatch(r"/bot([^/]+)/(\w+)", self.path)
                call = Call(match.group(2) if match else self.path, {}, time.monotonic())
                try:
                    if match is None:
                        raise ApiError(404, "Not Found")
                    if match.group(1) != state_.token:
                        raise ApiError(401, "Unauthorized")
                    call.params = _decode(raw, self.headers.get("Content-Type", ""))
                    body = {"ok": True, "result": state_.handle(call.method, call.params)}
                    status = 200
                except ApiError as exc:
                    call.ok, call.error = False, exc.description
                    body = {"ok": False, "error_code": exc.code, "description": exc.description}
                    status = exc.code
                if call.method != "getUpdates" or not call.ok or body.get("result"):
                    with state_._lock:
                        state_.calls.append(call)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeTelegram:
        self.state.url = self.url
        self._thread.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
