import json
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.store import LATEST, ModelStore, PublishRefused, StoreError


def writer(accuracy: float | None = 0.9, fail: bool = False) -> Any:
    def write(folder: Path) -> dict[str, Any]:
        (folder / "model.keras").write_bytes(b"weights")
        (folder / "vocab.json").write_text("{}")
        if fail:
            raise RuntimeError("crash while writing")
        metrics = {"test": {"accuracy": accuracy}} if accuracy is not None else {}
        return {"architecture": "test", "metrics": metrics}

    return write


def test_publish_creates_numbered_read_only_versions_and_moves_latest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    assert store.latest() is None and store.versions() == []
    first = store.publish(writer())
    second = store.publish(writer())
    assert (first.version, second.version) == ("v0001", "v0002")
    assert store.latest() == "v0002" and store.versions() == ["v0001", "v0002"]
    manifest = json.loads((second.path / "manifest.json").read_text())
    assert manifest["version"] == "v0002" and set(manifest["files"]) == {
        "model.keras",
        "vocab.json",
    }
    assert not ((second.path / "model.keras").stat().st_mode & 0o222)
    assert store.resolve("LATEST", verify=True).version == "v0002"


def test_refused_below_minimum_leaves_latest_and_nothing_visible(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    store.publish(writer(0.9))
    with pytest.raises(PublishRefused, match="below the minimum"):
        store.publish(writer(0.5), min_accuracy=0.8)
    with pytest.raises(PublishRefused, match="test split"):
        store.publish(writer(None), min_accuracy=0.8)
    assert store.versions() == ["v0001"] and store.latest() == "v0001"
    hidden = {p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".")}
    assert hidden <= {".lock"}  # no staging folder or temporary pointer left behind


def test_crash_while_writing_leaves_no_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    with pytest.raises(RuntimeError):
        store.publish(writer(fail=True))
    assert store.versions() == [] and store.latest() is None


def test_killed_publisher_leaves_only_an_invisible_staging_folder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    store.publish(writer())
    half = tmp_path / "m" / ".staging-deadbeef"  # what a SIGKILL mid-write leaves behind
    half.mkdir()
    (half / "model.keras").write_bytes(b"partial")
    assert store.versions() == ["v0001"] and store.latest() == "v0001"
    assert store.publish(writer()).version == "v0002"


def test_corrupt_file_is_detected(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    version = store.publish(writer())
    target = version.path / "model.keras"
    target.chmod(0o644)
    target.write_bytes(b"bit rot")
    with pytest.raises(StoreError, match="checksum"):
        store.resolve("v0001", verify=True)


def test_resolve_errors_are_clear(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    with pytest.raises(StoreError, match="no published version"):
        store.resolve("LATEST")
    store.publish(writer())
    with pytest.raises(StoreError, match="no such version"):
        store.resolve("v0042")
    (tmp_path / "m" / LATEST).write_text("../../etc")
    with pytest.raises(StoreError, match="malformed"):
        store.latest()


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.publish(writer()).version))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [f"v{i:04d}" for i in range(1, 9)]
    assert store.latest() == "v0008"  # whoever finished last, LATEST never went backwards


def test_a_slow_publisher_does_not_move_latest_back(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    older = store.publish(writer(), set_latest=False)  # staged first, finishes last
    newer = store.publish(writer())
    assert not store.set_latest(older.version, only_forward=True)
    assert store.latest() == newer.version
    assert store.set_latest(older.version)  # an explicit move (a rollback) still works
    assert store.latest() == older.version


def test_latest_stamp_changes_on_publish(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    assert store.latest_stamp() is None
    store.publish(writer())
    stamp = store.latest_stamp()
    store.publish(writer())
    assert store.latest_stamp() != stamp


def test_rollback_walks_back_through_what_latest_was_and_promote_moves_forward(
    tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path, "m")
    for _ in range(4):
        store.publish(writer())
    assert store.latest() == "v0004" and store.previous() == "v0003"
    assert store.rollback() == "v0003" and store.latest() == "v0003"
    assert store.rollback() == "v0002"  # again: further back, not a toggle
    store.set_latest("v0004")  # promote
    assert store.previous() == "v0002"
    assert [e["action"] for e in store.history()] == [
        "publish",
        "publish",
        "publish",
        "publish",
        "rollback",
        "rollback",
        "promote",
    ]
    # A torn last line (a crash while appending) is ignored.
    with (store.base / "LATEST.log").open("a") as fh:
        fh.write('{"version": "v00')
    assert store.previous() == "v0002"


def test_nothing_to_roll_back_to_and_removing_latest_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "m")
    store.publish(writer())
    with pytest.raises(StoreError, match="no previous"):
        store.rollback()
    with pytest.raises(StoreError, match="LATEST"):
        store.remove("v0001")
    store.publish(writer())
    store.remove("v0001")  # read-only files and all
    assert store.versions() == ["v0002"] and not list(store.base.glob(".trash-*"))
    with pytest.raises(StoreError, match="no previous"):
        store.rollback()  # v0001 is gone: the lineage skips it


def test_prune_and_promote_at_once_never_leave_latest_on_a_deleted_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow filesystem widens the window between ``remove``'s check and its rename: a
    promote of the version being removed lands either before (and the removal is refused)
    or after (and the promote is refused), never in between."""
    import os
    import time

    import shared.store

    store = ModelStore(tmp_path, "m")
    for _ in range(3):
        store.publish(writer())
    real_rename = os.rename

    def slow_rename(src: Any, dst: Any) -> None:
        if ".trash-" in str(dst):
            time.sleep(0.3)
        real_rename(src, dst)

    monkeypatch.setattr(shared.store.os, "rename", slow_rename)
    outcome: dict[str, Any] = {}

    def prune() -> None:
        try:
            store.remove("v0001")
            outcome["removed"] = True
        except StoreError as exc:
            outcome["removed"] = str(exc)

    remover = threading.Thread(target=prune)
    remover.start()
    time.sleep(0.1)  # the removal has checked LATEST and is renaming
    try:
        store.set_latest("v0001")
        outcome["promoted"] = True
    except StoreError as exc:
        outcome["promoted"] = str(exc)
    remover.join()
    latest = store.latest()
    assert latest is not None and (store.base / latest / "manifest.json").is_file(), outcome
    assert (outcome["removed"] is True) != (outcome["promoted"] is True), outcome
