"""Every command's ``--help`` reads as plain text and explains every option.

The commands are the console scripts of ``pyproject.toml``; subcommands (``sentiment-models
promote``) are checked too.  Docstrings are reStructuredText: no ````literal```` or :role:`x`
markup may reach a terminal, and an option without help text is a question left to the reader.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import REPO

SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
OPTION = re.compile(r"^ {2}(-\S.*?|\S+)(?: {2,}(\S.*))?$")
CHOICES = re.compile(r"^usage: .*?\{([a-z,-]+)\}", re.S)


def _help(main: Callable[..., Any], argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 0
    return capsys.readouterr().out


def undocumented(text: str) -> list[str]:
    """Options and positionals of an argparse help text that have no help text."""
    lines = text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not line.startswith("  ") or line.startswith("   "):
            continue
        found = OPTION.match(line)
        if found is None or found.group(2) or found.group(1).startswith("{"):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not (following.startswith(" " * 8) and not following.strip().startswith("-")):
            missing.append(found.group(1))
    return [m for m in missing if not m.startswith("-h, --help")]


def test_the_checker_finds_an_option_without_help() -> None:
    sample = """usage: x [-h] [--a A] [--b B]

options:
  -h, --help  show this help message and exit
  --a A
  --b B       the b
  --long-option-name LONG_OPTION_NAME
                        wrapped help
"""
    assert undocumented(sample) == ["--a A"]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_is_plain_and_complete(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    module, _, func = SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module), func)
    pages = {script: _help(main, ["--help"], capsys)}
    if choices := CHOICES.match(pages[script]):
        for sub in choices.group(1).split(","):
            pages[f"{script} {sub}"] = _help(main, [sub, "--help"], capsys)
    for name, text in pages.items():
        assert f"usage: {script}" in text, name
        assert "``" not in text and not re.search(r":[a-z]+:`", text), (name, text)
        assert undocumented(text) == [], (name, text)


def test_classify_says_not_sure_and_explains_its_marks() -> None:
    from shared.commands.classify import render

    answer = {
        "label": "negative",
        "scores": {"negative": 0.518, "positive": 0.482},
        "uncertain": True,
        "top_words": [["meh", 0.4], ["good", -0.1]],
        "top_phrases": [],
        "model_version": "sentiment-cnn/v0004",
    }
    shown = render(answer, "meh, good", color=False)
    assert shown.startswith("not sure: leans negative (51.8%)")
    assert "[+word] supports the label, [-word] opposes it" in shown
    assert "[+meh]" in shown and "[-good]" in shown  # signs are relative to the label
    sure = render({**answer, "uncertain": False}, "meh, good", color=False)
    assert sure.startswith("negative (51.8%)")
