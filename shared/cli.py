"""Command-line parsers built from a module's docstring, in plain text.

Our docstrings are reStructuredText (``code``, :func:`name`); ``--help`` shows them without the
markup.  The first paragraph is the description; with ``epilog`` the rest follows the options,
with ``whole`` the whole docstring is the description.  Line breaks are kept as written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_TITLE = re.compile(r"`([^`]+)`")
_EXAMPLES = re.compile(r"::$", re.M)


def plain(text: str) -> str:
    """``text`` without reStructuredText's inline markup."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _TITLE.sub(r"\1", text)
    return _EXAMPLES.sub(":", text)


def command_parser(
    prog: str, doc: str | None, *, epilog: bool = False, whole: bool = False
) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``prog`` described by ``doc`` (a module's ``__doc__``)."""
    text = (doc or "").strip()
    first, _, rest = text.partition("\n\n")
    return argparse.ArgumentParser(
        prog=prog,
        description=plain(text if whole else first),
        epilog=plain(rest) if epilog and rest and not whole else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_sentence_options(p: argparse.ArgumentParser) -> None:
    """The bulk commands' ``--sentences`` and ``--report`` (sentiment-enqueue, sentiment-run)."""
    p.add_argument(
        "--sentences",
        action="store_true",
        help="answer every sentence too: its offsets, label and scores (a 'sentences' column)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="HTML",
        help="also write an HTML summary of the batch (verdicts, targets, words; "
        "implies --sentences)",
    )
