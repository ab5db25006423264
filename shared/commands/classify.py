"""``sentiment-classify "some text"``: one review through the queue, printed with its top words.

Words that support the label are shown in green, words that oppose it in red (when the output is
a terminal; plain ``[+word]``/``[-word]`` markers otherwise).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from shared.announcements import served_version
from shared.cli import command_parser
from shared.config import ConfigError, Settings
from shared.highlight import for_terminal
from shared.log import configure_logging
from shared.queues import (
    QUEUE_INTERACTIVE,
    RedisUnavailable,
    collect,
    connect,
    enqueue_payloads,
    get_queue,
)
from shared.schema import DEFAULT_TOP_WORDS, make_payload, review_error


def render(result: dict[str, Any], text: str, color: bool) -> str:
    """The answer for a terminal: label and confidence, the marked review, words and phrases."""
    if result.get("error"):
        return f"error: {result['error']}"
    label, scores = result["label"], result["scores"]
    verdict = f"{label} ({scores[label]:.1%})"
    if result.get("uncertain"):  # under the version's calibrated threshold: only a leaning
        verdict = f"not sure: leans {label} ({scores[label]:.1%})"
    marks = (
        "green words support the label, red words oppose it"
        if color
        else "[+word] supports the label, [-word] opposes it"
    )
    lines = [
        f"{verdict}  model {result.get('model_version', '?')}",
        for_terminal(text, result["top_words"], color),
        f"top words ({marks}; weights in log-odds, > 0 towards the label): "
        + ", ".join(f"{w} {v:+.2f}" for w, v in result["top_words"]),
    ]
    if result["top_phrases"]:
        lines.append(
            "top phrases: " + ", ".join(f'"{p}" {v:+.2f}' for p, v in result["top_phrases"])
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("sentiment-classify", __doc__)
    p.add_argument("text", nargs="+", help="the review (quote it)")
    p.add_argument(
        "--top-words",
        type=int,
        default=DEFAULT_TOP_WORDS,
        help="top contributing words per review (default: %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a worker")
    args = p.parse_args(argv)
    text = " ".join(args.text)
    if error := review_error(text):
        print(f"sentiment-classify: {error}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, settings.log_format)
        conn = connect(settings.redis_url)
    except (ConfigError, RedisUnavailable) as exc:
        print(f"sentiment-classify: {exc}", file=sys.stderr)
        return 2
    payload = make_payload([("cli", text)], args.top_words, served_version(conn))
    (job_id,) = enqueue_payloads(
        get_queue(QUEUE_INTERACTIVE, conn), [payload], timeout=settings.job_timeout
    )
    outcome = collect(conn, [job_id], timeout=args.timeout)[job_id]
    if outcome.result is None:
        print(f"sentiment-classify: {outcome.error}", file=sys.stderr)
        return 1
    answer = dict(outcome.result["results"][0], model_version=outcome.result["model_version"])
    print(render(answer, text, color=sys.stdout.isatty()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
