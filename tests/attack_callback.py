"""A module an attacker names as an RQ callback: importing it leaves a mark (a file named by
``ATTACK_MARKER``), so a test can tell whether a worker ever imported or ran it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_marker = os.environ.get("ATTACK_MARKER")
if _marker:
    Path(_marker).touch()


def run(*args: Any, **kwargs: Any) -> None:
    """The callback itself (never reached: importing it already leaves the mark)."""
    if _marker:
        Path(_marker + ".ran").touch()
