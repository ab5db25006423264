"""A worker's hot reload when a version cannot be loaded yet, or the remote store is away:
retried after a growing pause, neither given up for good nor hammered."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shared.store import ModelStore
from tests.conftest import copy_store, publish_copy
from worker import reload


def test_a_latest_that_failed_to_load_is_retried_and_served_once_it_can_be(
    tiny_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "RETRY_S", (0.3, 1.0))
    store = copy_store(tiny_store, tmp_path)
    holder = reload.ModelHolder(store)
    holder.load()
    new = publish_copy(store).version
    model = store.base / new / "model.keras"
    hidden = model.with_name("model.keras.copying")
    model.rename(hidden)  # LATEST names a version whose files are not all there yet
    assert holder.maybe_reload() is False  # refused, the old version serves
    assert holder.current is not None and holder.current.model_version.endswith("v0001")
    assert holder.maybe_reload() is False  # not tried again at once
    hidden.rename(model)  # the copy completes
    deadline = time.monotonic() + 10
    while not holder.maybe_reload():
        assert time.monotonic() < deadline, "a fixed LATEST was never loaded"
        time.sleep(0.05)
    assert holder.current.model_version.endswith(new)


class _AwayStore:
    """The remote store (S3) unreachable: every call fails like a network error."""

    def __init__(self) -> None:
        self.calls = 0
        self.refused = None

    def sync(self) -> Any:
        self.calls += 1
        raise ConnectionError("the store is away")


def test_an_unreachable_remote_store_is_polled_after_a_growing_pause(
    tiny_store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "REMOTE_POLL_S", 0.02)
    monkeypatch.setattr(reload, "RETRY_S", (0.5, 2.0))
    away = _AwayStore()
    holder = reload.ModelHolder(tiny_store, remote=away)  # type: ignore[arg-type]
    holder._remote_pause = reload.REMOTE_POLL_S
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        holder._follow_remote()
        time.sleep(0.01)
    assert 2 <= away.calls <= 4  # 0, 0.5, 1.5 s: not every 20 ms (about 100 calls)
