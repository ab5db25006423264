"""Versioned model store: ``<root>/<name>/vNNNN/`` folders and an atomically replaced ``LATEST``.

A version folder explains itself: the Keras model, ``vocab.json``, ``manifest.json`` (version,
created, architecture, preprocessing, sequence length, labels, data fingerprint, metrics, and a
SHA-256 of every file), plus metrics and plots.  Publishing writes everything into a hidden
staging folder, checks it, makes the files read-only, fsyncs them and renames the folder into
place in one ``rename(2)``; then ``LATEST`` is replaced with ``os.replace`` (under a lock, and
only forward: concurrent publishers never move it back).  A crash or a power loss at any point
leaves either nothing visible or a complete version; a published version is never modified.

This module never imports TensorFlow: the caller passes a function that writes the files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
LATEST = "LATEST"
#: Every move of LATEST, one JSON line each: what ``rollback`` walks back through.
HISTORY = "LATEST.log"
MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.json"
MANIFEST_FORMAT = 1
STALE_STAGING_S = 3600.0
_VERSION = re.compile(r"^v(\d{4,})$")


class StoreError(RuntimeError):
    """A version is missing, incomplete, corrupt, or was refused."""


class PublishRefused(StoreError):
    """The candidate did not meet the publishing bar; LATEST was left untouched."""


@dataclass(frozen=True)
class Published:
    """A published, complete model version.

    Names used throughout the project: ``version`` is the store's folder name (``"v0003"``);
    ``model_version`` is the qualified name results carry (``"sentiment-cnn/v0003"``).
    """

    name: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def model_version(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def test_accuracy(self) -> float | None:
        """The test accuracy recorded at training time, if any."""
        value = self.manifest.get("metrics", {}).get("test", {}).get("accuracy")
        return float(value) if value is not None else None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """Publishes and resolves versions of one model name under ``root``."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.base = self.root / name

    def versions(self) -> list[str]:
        """Published version names, oldest first (staging folders are invisible)."""
        if not self.base.is_dir():
            return []
        found = [p.name for p in self.base.iterdir() if _VERSION.match(p.name) and p.is_dir()]
        return sorted(found, key=lambda v: int(v[1:]))

    def latest(self) -> str | None:
        """The version named by ``LATEST``, or None when nothing was published."""
        try:
            value = (self.base / LATEST).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not _VERSION.match(value):
            raise StoreError(f"{self.base / LATEST}: malformed pointer {value!r}")
        return value

    def latest_stamp(self) -> tuple[int, int] | None:
        """A cheap change detector for ``LATEST`` (inode, mtime_ns): one ``stat`` call."""
        try:
            st = os.stat(self.base / LATEST)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def resolve(self, version: str = "LATEST", verify: bool = False) -> Published:
        """Return a published version (``LATEST`` or ``vNNNN``); optionally check checksums."""
        name = self.latest() if version.upper() == LATEST else version
        if name is None:
            raise StoreError(f"no published version of {self.name!r} in {self.root}")
        path = self.base / name
        if not _VERSION.match(name) or not path.is_dir():
            raise StoreError(f"{path}: no such version (have: {', '.join(self.versions())})")
        manifest = read_manifest(path)
        if verify:
            verify_files(path, manifest)
        return Published(self.name, name, path, manifest)

    def publish(
        self,
        write: Callable[[Path], dict[str, Any]],
        min_accuracy: float | None = None,
        set_latest: bool = True,
        after: str | None = None,
    ) -> Published:
        """Stage files with ``write(folder) -> manifest``, check them, and publish atomically.

        The version number is the next after both this store's newest version and ``after``
        (a publisher that uploads to a shared store passes that store's newest: numbers come
        from where the version is published, not from a local cache that may lack some).

        Raises PublishRefused (nothing published, LATEST untouched) when the manifest's test
        accuracy is below ``min_accuracy`` or missing while a minimum is required.
        """
        self.base.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging()
        staging = self.base / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            manifest = dict(write(staging))
            self._check_bar(manifest, min_accuracy)
            published = self._rename_into_place(staging, manifest, after)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if set_latest:
            self.set_latest(published.version, only_forward=True, action="publish")
        return published

    def history(self) -> list[dict[str, Any]]:
        """Every move of LATEST, oldest first (``{"version", "action", "at"}``)."""
        try:
            lines = (self.base / HISTORY).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:  # a torn last line after a crash: ignored
                continue
        return out

    def lineage(self) -> list[str]:
        """The stack of versions LATEST went through (publish and promote push, rollback pops),
        restricted to versions still in the store; its last item is LATEST."""
        stack: list[str] = []
        for entry in self.history():
            if entry.get("action") == "rollback":
                if stack:
                    stack.pop()
                if not stack or stack[-1] != entry.get("version"):
                    stack.append(str(entry.get("version")))
            else:
                stack.append(str(entry.get("version")))
        present = set(self.versions())
        return [v for v in stack if v in present]

    def previous(self) -> str | None:
        """The version a rollback goes back to (the one before LATEST in the lineage)."""
        current = self.latest()
        stack = [v for v in self.lineage() if v != current]
        return stack[-1] if stack else None

    def set_latest(self, version: str, only_forward: bool = False, action: str = "promote") -> bool:
        """Point ``LATEST`` at ``version`` with an atomic replace; returns whether it moved.

        ``only_forward`` (publishing) leaves a newer LATEST alone: of two concurrent
        publishers, the later version wins whatever order they finish in.  The check and the
        replace happen under a lock on the store folder (as does ``remove``: a version cannot be
        deleted between the check that it exists and LATEST naming it).
        """
        with self._locked():
            if not (self.base / version / MANIFEST).is_file():
                raise StoreError(f"{self.base / version}: not a published version")
            current = self.latest()
            if only_forward and current is not None and int(current[1:]) > int(version[1:]):
                return False
            tmp = self.base / f".{LATEST}.{uuid.uuid4().hex}"
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(version + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.base / LATEST)
            _fsync_dir(self.base)
            history = self.base / HISTORY
            entries = []
            if current is not None and not history.exists():  # a store from before the log
                entries.append({"version": current, "action": "initial", "at": time.time()})
            entries.append({"version": version, "action": action, "at": time.time()})
            with history.open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(e) + "\n" for e in entries)
        return True

    def rollback(self) -> str:
        """Move LATEST back to the previous version of the lineage; returns it."""
        target = self.previous()
        if target is None:
            raise StoreError(f"{self.base}: no previous version to roll back to")
        self.set_latest(target, action="rollback")
        return target

    def remove(self, version: str) -> None:
        """Delete a version (never LATEST): renamed away in one step, under the store's lock
        (so a concurrent promote either sees it gone or keeps it), then deleted."""
        path = self.base / version
        trash = self.base / f".trash-{uuid.uuid4().hex}"
        with self._locked():
            if version == self.latest():
                raise StoreError(f"{version} is LATEST: promote another version first")
            if not _VERSION.match(version) or not path.is_dir():
                raise StoreError(f"{path}: no such version")
            os.rename(path, trash)
        for p in trash.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(trash, ignore_errors=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the store folder (``flock``: released if the process dies)."""
        self.base.mkdir(parents=True, exist_ok=True)
        with (self.base / ".lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _check_bar(self, manifest: dict[str, Any], min_accuracy: float | None) -> None:
        if min_accuracy is None:
            return
        accuracy = manifest.get("metrics", {}).get("test", {}).get("accuracy")
        if accuracy is None:
            raise PublishRefused("--min-accuracy needs a test split to measure accuracy on")
        if float(accuracy) < min_accuracy:
            raise PublishRefused(
                f"test accuracy {float(accuracy):.4f} is below the minimum {min_accuracy:.4f}"
            )

    def _rename_into_place(
        self, staging: Path, manifest: dict[str, Any], after: str | None = None
    ) -> Published:
        missing = [f for f in (MODEL_FILE, VOCAB_FILE) if not (staging / f).is_file()]
        if missing:
            raise StoreError(f"staged model lacks {', '.join(missing)}")
        floor = int(after[1:]) if after and _VERSION.match(after) else 0
        for _ in range(100):
            existing = self.versions()
            number = max(int(existing[-1][1:]) if existing else 0, floor) + 1
            version = f"v{number:04d}"
            manifest.update(
                format=MANIFEST_FORMAT,
                name=self.name,
                version=version,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            manifest["files"] = {
                p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.name != MANIFEST
            }
            (staging / MANIFEST).unlink(missing_ok=True)  # read-only after a lost race
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            for file in staging.iterdir():
                file.chmod(0o444)
                _fsync_file(file)  # the data is on disk before the rename makes it visible
            _fsync_dir(staging)
            try:
                os.rename(staging, self.base / version)
            except OSError:  # another publisher took this number: take the next one
                continue
            _fsync_dir(self.base)
            return Published(self.name, version, self.base / version, manifest)
        raise StoreError("could not allocate a version number")

    def _remove_stale_staging(self) -> None:
        now = time.time()
        for entry in self.base.glob(".staging-*"):
            try:
                if now - entry.stat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(entry, ignore_errors=True)
            except FileNotFoundError:
                pass


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the version folder ``path``; StoreError when unreadable."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise StoreError(f"{path}: unsupported manifest format")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Raise StoreError if a file listed in the manifest is missing or altered."""
    for name, expected in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise StoreError(f"{file}: missing")
        if sha256_file(file) != expected:
            raise StoreError(f"{file}: checksum mismatch (corrupt or modified)")
