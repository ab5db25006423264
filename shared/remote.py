"""The model store on object storage (the S3 API: AWS S3, MinIO, any compatible store).

Layout under ``s3://bucket/prefix/``: ``<name>/vNNNN/<file>`` and a ``<name>/LATEST`` pointer,
as in the filesystem store.  Versions are made by the filesystem store (``shared.store``) and
uploaded whole:

* **publish** (``RemoteStore.upload``): every file of a local published version, the
  manifest last, then the ``LATEST`` pointer.  A version without its manifest is invisible;
  the pointer only moves forward (a newer LATEST is never replaced by an older version).
* **workers** (``RemoteSync``): poll the pointer with a conditional GET (an ETag match costs a
  304), download a new version into a staging folder of their local cache, check every file
  against the manifest's SHA-256, then rename it into place and move the cache's ``LATEST``:
  from there the hot reload of ``worker.reload`` takes over, exactly as with a local store.
  A partial or corrupt upload fails the checks and is refused like a corrupt local version;
  the refusal is remembered until the pointer moves again.

Credentials come from the standard AWS sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
profiles, instance roles); ``S3_ENDPOINT_URL`` points at MinIO or another compatible server.
Workers need read-only credentials; only the trainer writes.  With ``MODEL_SIGNING_KEY`` the
uploader signs each manifest, and with ``MODEL_VERIFY_KEY`` workers refuse any version whose
manifest is not signed by that key (``shared.signing``), before fetching a file it names.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from shared import signing
from shared.store import (
    LATEST,
    MANIFEST,
    ModelStore,
    Published,
    StoreError,
    read_manifest,
    verify_files,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Location:
    """``s3://bucket/prefix`` split."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"model store URL must look like s3://bucket/prefix, got {url!r}")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client (``S3_ENDPOINT_URL`` unless given) with bounded retries."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )


class RemoteStore:
    """One model name in an S3 bucket: versions, the LATEST pointer, upload and download."""

    def __init__(
        self,
        url: str,
        name: str,
        client: Any = None,
        keys: tuple[str | None, str | None] | None = None,
    ) -> None:
        self.location = Location.parse(url)
        self.name = name
        self.client = client if client is not None else s3_client()
        #: (signing key, verify key); from MODEL_SIGNING_KEY / MODEL_VERIFY_KEY by default.
        self.signing_key, self.verify_key = keys if keys is not None else signing.keys()

    def __repr__(self) -> str:
        return f"RemoteStore(s3://{self.location.bucket}/{self.location.prefix}, {self.name!r})"

    def _key(self, *parts: str) -> str:
        return self.location.key(self.name, *parts)

    # -- reading ------------------------------------------------------------------------------
    def latest(self, etag: str | None = None) -> tuple[str | None, str | None]:
        """``(version, etag)`` of the pointer; ``(None, etag)`` when it did not change since
        ``etag``; ``(None, None)`` when nothing was published."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self._key(LATEST)}
        if etag:
            kwargs["IfNoneMatch"] = etag
        try:
            answer = self.client.get_object(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 or code in ("304", "NotModified"):
                return None, etag
            if code in ("NoSuchKey", "404"):
                return None, None
            raise
        value = answer["Body"].read().decode("utf-8").strip()
        if not value.startswith("v") or not value[1:].isdigit():
            raise StoreError(f"{self}: malformed LATEST pointer {value!r}")
        return value, str(answer["ETag"])

    def versions(self) -> list[str]:
        """Versions whose manifest was uploaded (complete uploads), oldest first."""
        paginator = self.client.get_paginator("list_objects_v2")
        found = set()
        prefix = self._key("") + "/"
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                parts = item["Key"][len(prefix) :].split("/")
                if len(parts) == 2 and parts[1] == MANIFEST:
                    found.add(parts[0])
        return sorted(found, key=lambda v: int(v[1:]))

    def download(self, version: str, cache: ModelStore) -> Published:
        """Fetch ``version`` into the local ``cache`` (staged, verified, renamed into place);
        StoreError when it is incomplete or a file does not match its checksum."""
        target = cache.base / version
        if (target / MANIFEST).is_file():
            published = cache.resolve(version)
            verify_files(published.path, published.manifest)
            return published
        cache.base.mkdir(parents=True, exist_ok=True)
        staging = cache.base / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            manifest, raw, signature = self._get_signed_manifest(version)
            for name in manifest.get("files", {}):
                if "/" in name or name in ("", ".", "..", signing.SIGNATURE_FILE):
                    raise StoreError(f"{self}/{version}: unsafe file name {name!r}")
                self._get_file(self._key(version, name), staging / name, version)
            (staging / MANIFEST).write_bytes(raw)
            if signature is not None:
                (staging / signing.SIGNATURE_FILE).write_bytes(signature)
            read_manifest(staging)
            verify_files(staging, manifest)
            for file in staging.iterdir():
                file.chmod(0o444)
            try:
                os.rename(staging, target)
            except OSError:  # another process of this host fetched it first
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cache.resolve(version, verify=True)

    def _get_manifest(self, version: str) -> dict[str, Any]:
        return self._get_signed_manifest(version)[0]

    def _get_signed_manifest(self, version: str) -> tuple[dict[str, Any], bytes, bytes | None]:
        """The manifest, its exact bytes and its signature; with a verify key, StoreError
        unless the signature holds (checked before anything in the manifest is trusted)."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(
                Bucket=self.location.bucket, Key=self._key(version, MANIFEST)
            )["Body"].read()
        except ClientError as exc:
            raise StoreError(f"{self}/{version}: no manifest (incomplete upload?): {exc}") from exc
        signature = self._get_signature(version)
        if self.verify_key:
            signing.verify(body, signature, self.verify_key, f"{self}/{version}")
        try:
            manifest = json.loads(body)
        except ValueError as exc:
            raise StoreError(f"{self}/{version}: unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict) or not manifest.get("files"):
            raise StoreError(f"{self}/{version}: manifest lists no files")
        return manifest, body, signature

    def _get_signature(self, version: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return bytes(
                self.client.get_object(
                    Bucket=self.location.bucket, Key=self._key(version, signing.SIGNATURE_FILE)
                )["Body"].read()
            )
        except ClientError:
            return None

    def _get_file(self, key: str, path: Path, version: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.location.bucket, key, str(path))
        except ClientError as exc:
            raise StoreError(f"{self}/{version}: {key} missing (incomplete upload?)") from exc

    # -- writing ------------------------------------------------------------------------------
    def upload(self, published: Published, set_latest: bool = True) -> bool:
        """Upload a local published version (files, then its manifest), then move LATEST to it
        unless a newer version is already there; returns whether LATEST moved."""
        verify_files(published.path, published.manifest)
        version = published.version
        existing = self._remote_manifest(version)
        if existing is not None and existing.get("files") != published.manifest.get("files"):
            raise StoreError(f"{self}/{version}: a different version of that name is published")
        if existing is None:
            for name in published.manifest.get("files", {}):
                self.client.upload_file(
                    str(published.path / name), self.location.bucket, self._key(version, name)
                )
            if self.signing_key:  # the signature before the manifest that makes it visible
                raw = (published.path / MANIFEST).read_bytes()
                self.client.put_object(
                    Bucket=self.location.bucket,
                    Key=self._key(version, signing.SIGNATURE_FILE),
                    Body=signing.sign(raw, self.signing_key),
                )
            # The manifest last: until it exists the version is invisible to workers.
            self.client.upload_file(
                str(published.path / MANIFEST), self.location.bucket, self._key(version, MANIFEST)
            )
        log.info("model_uploaded", store=repr(self), version=version)
        if set_latest:
            return self.set_latest(version, only_forward=True)
        return False

    def set_latest(self, version: str, only_forward: bool = False) -> bool:
        """Point LATEST at a complete version (one PUT: readers see the old or the new)."""
        if self._remote_manifest(version) is None:
            raise StoreError(f"{self}/{version}: not a published version")
        current, _ = self.latest()
        if current == version:
            return False
        if only_forward and current is not None and int(current[1:]) > int(version[1:]):
            return False
        self.client.put_object(
            Bucket=self.location.bucket, Key=self._key(LATEST), Body=(version + "\n").encode()
        )
        log.info("model_latest_moved", store=repr(self), version=version, previous=current)
        return True

    def _remote_manifest(self, version: str) -> dict[str, Any] | None:
        try:
            return self._get_manifest(version)
        except StoreError:
            return None


class RemoteSync:
    """Keeps a local cache (a ``ModelStore``) following a remote store's LATEST.

    ``sync()`` is cheap when nothing changed (one conditional GET); when the pointer moved it
    downloads and verifies the version, then moves the cache's LATEST, which the worker's hot
    reload notices.  A version that fails is refused until the pointer moves again.
    """

    def __init__(self, remote: RemoteStore, cache: ModelStore) -> None:
        self.remote = remote
        self.cache = cache
        self._etag: str | None = None
        self.refused: str | None = None

    def sync(self) -> str | None:
        """Follow the pointer; returns the version newly made LATEST in the cache, if any."""
        version, etag = self.remote.latest(self._etag)
        if version is None:
            if etag is None and self.cache.latest() is None:
                raise StoreError(f"no published version in {self.remote!r}")
            return None
        if version == self.cache.latest():
            self._etag = etag
            return None
        try:
            self.remote.download(version, self.cache)
        except StoreError:
            # Refused for good (incomplete, corrupt): not fetched again until LATEST moves.
            # Other errors (the store is away) leave the ETag alone, so the next poll retries.
            self._etag, self.refused = etag, version
            raise
        self._etag, self.refused = etag, None
        self.cache.set_latest(version)
        log.info("model_fetched", store=repr(self.remote), version=version)
        return version
