"""Replies always parse as Telegram HTML and fit one message; limits and settings behave."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.fake_telegram import TOKEN, ApiError, check_text, parse_html
from bot import render
from bot.config import BotSettings
from bot.limits import NOTICE_EVERY_S, UserLimits
from shared.config import ConfigError

RESULT = {
    "label": "positive",
    "scores": {"negative": 0.1, "positive": 0.9},
    "top_words": [["superb", 1.5], ["film's", 0.2], ["boring", -0.7], ["&", 0.1]],
    "top_phrases": [["superb cast", 1.2]],
    "truncated": False,
    "n_tokens": 9,
}


def test_answer_highlights_supporting_and_opposing_words_and_escapes_the_rest() -> None:
    text = "A SUPERB cast, never boring <script>alert(1)</script> & more"
    reply = render.answer(text, RESULT, "tiny/v0001")
    visible = check_text(reply, "HTML")  # parses like Telegram parses it
    assert "<b>SUPERB</b>" in reply and "<u><i>boring</i></u>" in reply
    assert "&lt;script&gt;" in reply and "<script>" not in reply
    assert "<script>alert(1)</script> & more" in visible
    assert "Positive" in visible and "90% confident" in visible and "superb cast" in visible
    assert "tiny/v0001" in visible


@given(
    st.lists(
        st.sampled_from([*"ab <>&;'\"\n😀é", "superb", "boring", "&amp;", "film's"]),
        max_size=3000,
    ).map(lambda parts: "".join(parts) * 3)
)
def test_any_review_renders_to_valid_html_within_the_limit(text: str) -> None:
    reply = render.answer(text, {**RESULT, "truncated": True}, "v")
    if not text.strip():
        return
    visible = check_text(reply, "HTML")
    assert render.utf16_len(visible) <= render.MAX_MESSAGE
    assert render.utf16_len(reply) <= render.MAX_MESSAGE


def test_long_review_is_cut_before_escaping_with_a_note() -> None:
    text = ("superb & <b> " * 2000) + "THE END"
    reply = render.answer(text, {**RESULT, "truncated": True, "n_tokens": 6000}, "v")
    assert render.utf16_len(reply) <= render.MAX_MESSAGE
    visible = check_text(reply, "HTML")
    assert "shortened here to fit one message" in visible
    assert "6000 words" in visible and "THE END" not in visible


def test_the_fake_api_is_as_strict_as_telegram_about_html() -> None:
    for bad in ("<script>x</script>", "a & b", "<b>open", "<b><i>x</b></i>", "1 < 2"):
        with pytest.raises(ApiError):
            parse_html(bad)
    assert parse_html("<b>a</b> &amp; &lt;3 &#33;") == "a & <3 !"
    with pytest.raises(ApiError, match="too long"):
        check_text("x" * 4097, None)
    with pytest.raises(ApiError, match="empty"):
        check_text("<b> </b>", "HTML")


def test_user_limits_count_in_redis_hold_one_in_flight_and_notice_once() -> None:
    import asyncio

    import fakeredis

    from shared.feedback import hash_user
    from shared.ratelimit import AsyncLimiter

    async def scenario() -> None:
        server = fakeredis.FakeServer()
        now = [0.0]

        def limits() -> UserLimits:
            aconn = fakeredis.aioredis.FakeRedis(server=server)
            return UserLimits(AsyncLimiter(aconn), per_minute=2, clock=lambda: now[0])

        limiter = limits()
        assert (await limiter.acquire(1)).allowed
        busy = await limiter.acquire(1)
        assert not busy.allowed and busy.reason == "in_flight" and busy.notify
        assert (await limiter.acquire(2)).allowed  # other users are not affected
        limiter.release(1)
        # A restarted (or second) bot process shares the budget: it lives in Redis.
        restarted = limits()
        assert (await restarted.acquire(1)).allowed
        restarted.release(1)
        over = await restarted.acquire(1)
        assert not over.allowed and over.reason == "rate" and 0 < over.retry_in <= 60
        assert over.notify
        again = await restarted.acquire(1)
        assert not again.notify  # a flood gets one answer, not one per message
        now[0] = NOTICE_EVERY_S + 1
        assert (await restarted.acquire(1)).notify
        keys = [k.decode() for k in await fakeredis.aioredis.FakeRedis(server=server).keys()]
        # Counted under the user's pseudonym, never their Telegram id.
        assert keys and all(k.startswith("sentiment:limits") for k in keys)
        assert any(hash_user("tg:1") in k for k in keys)

    asyncio.run(scenario())


def test_bot_settings_require_a_real_looking_token_and_hide_it() -> None:
    with pytest.raises(ConfigError, match="not set"):
        BotSettings.from_env({})
    with pytest.raises(ConfigError, match="FEEDBACK_SALT"):  # votes need keyed pseudonyms
        BotSettings.from_env({"TELEGRAM_BOT_TOKEN": TOKEN})
    for placeholder in ("changeme", "your-token-here", "123:abc"):
        with pytest.raises(ConfigError, match="placeholder"):
            BotSettings.from_env({"TELEGRAM_BOT_TOKEN": placeholder})
    settings = BotSettings.from_env(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": "http://127.0.0.1:9/",
            "BOT_ALLOWED_USERS": "5, 7",
            "BOT_RATE_PER_MINUTE": "4",
            "FEEDBACK_SALT": "a-salt-for-tests",
        }
    )
    assert settings.base_url == "http://127.0.0.1:9/bot"
    assert settings.allowed_users == {5, 7} and settings.rate_per_minute == 4
    assert TOKEN not in repr(settings)
    with pytest.raises(ConfigError, match="user ids"):
        BotSettings.from_env(
            {"TELEGRAM_BOT_TOKEN": TOKEN, "BOT_ALLOWED_USERS": "alice", "FEEDBACK_SALT": "s"}
        )


def test_a_mixed_answer_is_headed_with_what_each_side_is_about() -> None:
    text = "The acting was superb. The plot made no sense."
    sentence = {"uncertain": False, "top_words": [], "reasons": []}
    result = {
        **RESULT,
        "verdict": "mixed",
        "reasons": ["superb"],
        "sentences": [
            {**sentence, "start": 0, "end": 22, "label": "positive", "reasons": ["superb"]},
            {**sentence, "start": 23, "end": 46, "label": "negative", "reasons": ["sense"]},
        ],
        "about": {"positive": ["acting", "music"], "negative": ["plot", "ending"]},
    }
    visible = check_text(render.answer(text, result, "m/v1"), "HTML")
    assert visible.startswith("⚖️ Mixed: 👍 acting, music · 👎 plot, ending"), visible
    no_targets = {**result, "about": {"positive": [], "negative": []}}
    visible = check_text(render.answer(text, no_targets, "m/v1"), "HTML")
    assert visible.startswith("⚖️ Mixed: 👍 superb · 👎 sense"), visible  # the words instead


def test_the_english_only_reply_is_in_the_reviews_language_and_escaped() -> None:
    assert "nur Englisch" in check_text(render.english_only("de"), "HTML")
    unknown = check_text(render.english_only("x<y"), "HTML")  # never trusted as markup
    assert unknown.startswith("🌐 x<y") and "I read English only" in unknown
