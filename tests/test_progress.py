"""Progress: a bar on a terminal, a few structured lines in a log (never carriage returns)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from structlog.testing import capture_logs

from shared.progress import LogProgress

REPO = Path(__file__).resolve().parents[1]

# 2,000 steps of slow-ish work, as a training loop or a bulk enqueue reports them.
SCRIPT = """
import time
from shared.log import configure_logging
from shared.progress import progress
configure_logging("INFO", "auto")
with progress(total=2000, desc="enqueue", unit=" reviews") as bar:
    for _ in range(2000):
        time.sleep(0.0002)
        bar.update(1)
for _ in progress(range(500), desc="tokenize"):
    pass
"""


def _env(every_s: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PROGRESS_EVERY_S": every_s}


def test_in_a_log_progress_is_a_few_json_lines_with_counts() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=_env("0.2"),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode()
    assert "\r" not in err  # no bar redraws in a file
    events = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all(e["logger"] == "progress" for e in events)
    finals = [e for e in events if e["event"] == "progress_done"]
    assert [(e["task"], e["done"], e.get("total")) for e in finals] == [
        ("enqueue", 2000, 2000),
        ("tokenize", 500, 500),
    ]
    assert finals[0]["percent"] == 100.0 and finals[0]["unit"] == "reviews"
    # Lines in between are rate-limited by time, not one per step.
    middle = [e for e in events if e["event"] == "progress"]
    assert len(middle) < 100
    assert all(0 < e["done"] < 2000 and "eta_s" in e for e in middle if e["task"] == "enqueue")


def test_on_a_terminal_it_is_tqdms_bar() -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a real width
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], env=_env("0.2"), stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert child.wait(60) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert "\r" in text and "2000/2000" in text and "500/500" in text
    assert '"event": "progress' not in text


def test_log_progress_reports_at_most_every_interval_and_once_at_the_end() -> None:
    with capture_logs() as logs:
        with LogProgress[int](total=10, desc="x", every_s=3600) as bar:
            for _ in range(10):
                bar.update(1)
        with LogProgress[int](total=3, desc="y", every_s=0) as bar:
            for _ in range(3):
                bar.update(1)
        with LogProgress(desc="nothing", every_s=0):
            pass  # no work done: no line
        for _ in LogProgress([1, 2], desc="off", disable=True, every_s=0):
            pass
    assert [(e["event"], e["task"], e["done"]) for e in logs] == [
        ("progress_done", "x", 10),
        ("progress", "y", 1),
        ("progress", "y", 2),
        ("progress", "y", 3),
        ("progress_done", "y", 3),
    ]
