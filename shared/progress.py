"""Progress of long work: a tqdm bar on a terminal, a structured log line in a log.

In a log (compose, Kubernetes, CI, ``> file``) a tqdm bar writes a carriage return per refresh, so
an hour of training becomes megabytes of half-lines nobody can read or search. ``progress()``
keeps tqdm (a well-kept library: rates, ETA, unit scaling) where a person watches a terminal,
and otherwise emits one ``progress`` event through structlog (JSON in production) at most every
``PROGRESS_EVERY_S`` seconds (default 10) plus one at the end, with done/total, rate and ETA.

Both sides offer what our callers use: iteration, ``with``, ``update(n)`` and ``close()``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import structlog

T = TypeVar("T")

#: Seconds between two progress lines in a log.
EVERY_S_DEFAULT = 10.0


def on_terminal() -> bool:
    """True when stderr (where tqdm draws) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _every_s() -> float:
    try:
        return max(0.0, float(os.environ.get("PROGRESS_EVERY_S", EVERY_S_DEFAULT)))
    except ValueError:
        return EVERY_S_DEFAULT


class LogProgress(Generic[T]):
    """The tqdm subset we use, reporting as structured log lines at a bounded rate."""

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        disable: bool = False,
        every_s: float | None = None,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit.strip() or "it"
        self.n = initial
        self.disable = disable
        self.every_s = _every_s() if every_s is None else every_s
        self._start = self._last = time.monotonic()
        self._initial = initial
        self._closed = False
        self._log = structlog.get_logger("progress")

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("LogProgress built without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self._last >= self.every_s:
            self._last = now
            self._emit(now, final=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n > self._initial:
            self._emit(time.monotonic(), final=True)

    def _emit(self, now: float, final: bool) -> None:
        elapsed = now - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        fields: dict[str, Any] = {
            "task": self.desc,
            "done": round(self.n, 3),
            "unit": self.unit,
            "rate_per_s": round(rate, 2),
            "elapsed_s": round(elapsed, 1),
        }
        if self.total:
            fields["total"] = self.total
            fields["percent"] = round(100.0 * self.n / self.total, 1)
            if rate > 0 and not final:
                fields["eta_s"] = round(max(0.0, self.total - self.n) / rate, 1)
        self._log.info("progress_done" if final else "progress", **fields)


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: float = 0,
    disable: bool = False,
    unit_scale: bool = False,
) -> Any:
    """A tqdm bar on a terminal, a :class:`LogProgress` elsewhere (same calls on both)."""
    if on_terminal():
        from tqdm import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            disable=disable,
            unit_scale=unit_scale,
        )
    return LogProgress(
        iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable
    )
