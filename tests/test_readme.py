"""The README's commands run as written, and the docs' commands name what exists.

``test_the_readme_runs_as_written`` copies the tracked tree to a temporary folder (a fresh clone,
with the installed virtualenv and the shipped models linked in) and runs every line of the
README's ``sh`` blocks, in order, in bash, the way a newcomer pastes them.  What a person does
between lines the harness does too, and nothing else:

* ``sentiment-run --serve`` runs "in one terminal": the harness starts it on its own and pastes
  the ``export REDIS_URL=...`` line it printed where the README says to;
* ``curl`` fails on an HTTP error status (``--fail-with-body``), so a 401 is a failure, not an
  answer printed and ignored.

Lines that cannot run here are in ``NOT_RUN`` with the reason and the test that covers them;
a line matching no entry runs.  ``test_docs_commands_name_what_exists`` reads every ``sh`` block
of ``docs/``: each of our commands must exist, each option it is given must appear in that
command's ``--help``, and each input file it names must exist in the repository (a placeholder
for the reader's own file says so: ``my_*``).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

#: (pattern, reason): README lines the harness does not run.
NOT_RUN: list[tuple[str, str]] = [
    (r"^make test\b", "this is the command that runs this test"),
    (
        r"^docker compose\b",
        "no Docker engine on these machines: tests/test_compose.py validates the file and runs "
        "each service's command as a local process",
    ),
    (
        r"^sentiment-bot\b",
        "needs a real bot token from @BotFather: tests/bot/ run the real polling loop against "
        "a fake Bot API server",
    ),
]

SCRIPTS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
FENCE = re.compile(r"^```(\w*)\s*$")
SERVE = re.compile(r"^sentiment-run --serve\b")
PASTE = re.compile(r"^export REDIS_URL=.*# the line --serve printed")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def shell_lines(markdown: str) -> list[str]:
    """The commands of a Markdown text's ``sh`` blocks: continued lines joined, blanks dropped."""
    lines: list[str] = []
    block: str | None = None
    pending = ""
    for raw in markdown.splitlines():
        fence = FENCE.match(raw.strip())
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block not in ("sh", "bash", "console"):
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def not_run(line: str) -> str | None:
    """Why ``line`` is not run, or None."""
    return next((why for pattern, why in NOT_RUN if re.search(pattern, line)), None)


def test_the_harness_reads_blocks_and_knows_its_exceptions() -> None:
    text = "x\n```sh\na --b \\\n  c   # note\n# comment\n\nmake test\n```\n```text\nnot me\n```\n"
    assert shell_lines(text) == ["a --b c   # note", "make test"]
    assert not_run("make test") and not_run("docker compose up -d") and not not_run("make run")


def _fresh_copy(dest: Path) -> None:
    """The tracked tree, as a clone has it, with the virtualenv and shipped models linked in."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        src = REPO / name
        if name.startswith("models/") or not src.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)  # keeps mtimes: make sees an installed .venv as up to date
    (dest / "models").symlink_to(REPO / "models")
    (dest / ".venv").symlink_to(Path(sys.prefix))


def _script(lines: list[str]) -> str:
    out = [
        'curl() { command curl --fail-with-body --silent --show-error "$@"; }',
        "export -f curl",
    ]
    for line in lines:
        out.append(f"echo {shlex.quote('$ ' + line)} >&2")
        out.append(line)
        check = shlex.quote(f"README line failed: {line}")
        out.append(f'rc=$?; if [ $rc -ne 0 ]; then echo "exit $rc:" {check} >&2; exit 1; fi')
    return "\n".join(out) + "\n"


def _run(script: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr[-6000:]}\n--- stdout ---\n{done.stdout[-3000:]}"
    return done.stdout


@contextlib.contextmanager
def _serving(line: str, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """``sentiment-run --serve`` "in one terminal": yields the export line it printed."""
    proc = subprocess.Popen(
        ["bash", "-c", f"source .venv/bin/activate && exec {line}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for out in proc.stdout:
            seen.append(out)
            if out.strip().startswith("export REDIS_URL="):
                yield out.strip()
                break
        else:
            pytest.fail(f"sentiment-run --serve printed no export line:\n{''.join(seen)}")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert rc == 130, f"Ctrl-C on sentiment-run --serve: exit {rc}"


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    if not (Path(sys.prefix) / ".installed").exists():
        pytest.skip("the tests do not run from `make install`'s virtualenv (.venv/.installed)")
    lines = shell_lines((REPO / "README.md").read_text())
    assert any(SERVE.match(line) for line in lines) and any(PASTE.match(line) for line in lines)
    work = tmp_path / "clone"
    _fresh_copy(work)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    before = [line for line in lines[: next(i for i, x in enumerate(lines) if SERVE.match(x))]]
    after = lines[len(before) + 1 :]
    _run(_script([x for x in before if not not_run(x)]), work, env, timeout=600)
    with _serving(lines[len(before)], work, env) as export:
        second = ["source .venv/bin/activate"] + [
            export if PASTE.match(x) else x for x in after if not not_run(x)
        ]
        _run(_script(second), work, env, timeout=600)
    # What the last lines wrote: one output row per input record of the sample they read.
    samples_csv = _csv_rows(work / "samples/reviews.csv")
    assert _csv_rows(work / "results.csv") == samples_csv
    assert _csv_rows(work / "batch.csv") == samples_csv
    jsonl = (work / "samples/reviews.jsonl").read_text().splitlines()
    assert len((work / "results.jsonl").read_text().splitlines()) == len(jsonl)


def _csv_rows(path: Path) -> int:
    with path.open(newline="") as fh:
        return len(list(csv.DictReader(fh)))


def _help_text(script: str, sub: str | None, capsys: pytest.CaptureFixture[str]) -> str:
    module, _, func = SCRIPTS[script].partition(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit):
        main([sub, "--help"] if sub else ["--help"])
    return capsys.readouterr().out


def _input_files(words: list[str]) -> list[str]:
    """Arguments naming an input file: a known extension, not the value of an output option."""
    files = []
    for i, word in enumerate(words):
        if i and words[i - 1] in ("-o", "--output", "--out"):
            continue
        if re.fullmatch(r"[\w./-]+\.(txt|csv|jsonl|json|tar\.gz|yaml|yml|md)", word):
            files.append(word)
    return files


def test_docs_commands_name_what_exists(capsys: pytest.CaptureFixture[str]) -> None:
    checked = 0
    problems = []
    for page in [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]:
        for line in shell_lines(page.read_text()):
            command = line.split("#", 1)[0]
            for part in re.split(r"&&|\||;|\$\(", command):
                try:
                    words = shlex.split(part.replace(")", " "))
                except ValueError:
                    continue
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]  # VAR=value before the command
                if not words or words[0] not in SCRIPTS:
                    continue
                sub = words[1] if len(words) > 1 and not words[1].startswith("-") else None
                text = _help_text(words[0], None, capsys)
                if sub and re.search(r"\{[a-z,-]*\b" + re.escape(sub) + r"\b", text):
                    text = _help_text(words[0], sub, capsys)
                for option in OPTION.findall(" ".join(words[1:])):
                    if option not in text:
                        problems.append(f"{page.name}: {words[0]} has no {option}: {line}")
                for name in _input_files(words[1:]):
                    if not name.startswith(("my_", "/")) and not (REPO / name).exists():
                        problems.append(f"{page.name}: {name} does not exist: {line}")
                checked += 1
    assert checked > 20  # the pages do show our commands
    assert problems == []


def test_readme_links_resolve() -> None:
    """The README is read on GitHub, outside the docs build: its local links must exist too."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) > 10
    assert [link for link in local if not (REPO / link).exists()] == []


def test_every_setting_of_the_example_env_is_documented() -> None:
    """docs/operations.md's configuration table names every variable .env.example sets."""
    example = (REPO / ".env.example").read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M)
    page = (REPO / "docs/operations.md").read_text()
    assert len(names) > 30
    assert [n for n in names if f"`{n}`" not in page] == []
