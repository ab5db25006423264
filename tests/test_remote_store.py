"""The S3 model store against a real S3-compatible server: moto's standalone server.

Why moto's server is faithful enough here: boto3 talks to it over HTTP exactly as to AWS S3 or
MinIO (SigV4-signed requests, ETags, conditional GETs answered 304, list pagination, multipart
uploads by ``upload_file`` for big files), so every client code path runs for real; what it does
not model (durability, cross-region replication, request pricing) is nothing our store relies
on.  It installs from PyPI (``moto[server]``), so CI needs no binary and no Docker.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.infra import MOTO_SERVER, moto_s3
from shared.local import RedisServer, start_worker, stop_processes, wait_for_workers
from shared.queues import QUEUE_INTERACTIVE, collect, connect, enqueue_payloads, get_queue
from shared.remote import RemoteStore, RemoteSync
from shared.schema import make_payload
from shared.store import ModelStore, StoreError, sha256_file
from tests.conftest import copy_store, env_for, publish_copy

BUCKET = "models"

pytestmark = pytest.mark.skipif(
    not MOTO_SERVER.exists(), reason="moto[server] not installed (dev extra)"
)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on loopback with our bucket; this process's boto3 points at it."""
    with moto_s3((BUCKET,)) as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _remote(prefix: str, name: str = "tiny") -> RemoteStore:
    return RemoteStore(f"s3://{BUCKET}/{prefix}", name)


def test_upload_then_sync_into_an_empty_cache_and_a_304_when_nothing_moved(
    s3: dict[str, str], tiny_store: ModelStore, tmp_path: Path
) -> None:
    remote = _remote("roundtrip")
    assert remote.latest() == (None, None) and remote.versions() == []
    assert remote.upload(tiny_store.resolve("v0001")) is True
    version, etag = remote.latest()
    assert version == "v0001" and etag and remote.versions() == ["v0001"]
    cache = ModelStore(tmp_path / "cache", "tiny")
    sync = RemoteSync(remote, cache)
    assert sync.sync() == "v0001"
    fetched = cache.resolve("LATEST", verify=True)
    assert fetched.manifest["files"] == tiny_store.resolve("v0001").manifest["files"]
    assert remote.latest(etag) == (None, etag)  # conditional GET: unchanged
    assert sync.sync() is None
    # Uploading the same version again is a no-op; a different one under its name is refused.
    assert remote.upload(tiny_store.resolve("v0001")) is False
    other = copy_store(tiny_store, tmp_path / "other")
    (other.base / "v0001" / "vocab.json").write_text("{}")
    manifest = json.loads((other.base / "v0001" / "manifest.json").read_text())
    manifest["files"]["vocab.json"] = sha256_file(other.base / "v0001" / "vocab.json")
    (other.base / "v0001" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="different version"):
        remote.upload(other.resolve("v0001"))


def test_partial_and_corrupt_uploads_are_refused_until_the_pointer_moves(
    s3: dict[str, str], tiny_store: ModelStore, tmp_path: Path
) -> None:
    local = copy_store(tiny_store, tmp_path / "trainer")
    remote = _remote("faults")
    remote.upload(local.resolve("v0001"))
    cache = ModelStore(tmp_path / "cache", "tiny")
    sync = RemoteSync(remote, cache)
    assert sync.sync() == "v0001"

    # Partial: the files of v0002 but not its manifest -> invisible, cannot become LATEST.
    v2 = publish_copy(local)
    for name in v2.manifest["files"]:
        remote.client.upload_file(str(v2.path / name), BUCKET, remote._key("v0002", name))
    assert remote.versions() == ["v0001"]
    with pytest.raises(StoreError):
        remote.set_latest("v0002")
    # ... and a pointer forced onto it (a crashed or foreign publisher) is refused by workers.
    remote.client.put_object(Bucket=BUCKET, Key=remote._key("LATEST"), Body=b"v0002\n")
    with pytest.raises(StoreError, match="no manifest"):
        sync.sync()
    assert sync.refused == "v0002" and cache.latest() == "v0001"
    assert sync.sync() is None  # remembered: not fetched again while the pointer stays
    assert not list(cache.base.glob(".staging-*"))

    # Corrupt: complete upload, one file altered after the manifest was written.
    v3 = publish_copy(local)
    remote.upload(v3)
    remote.client.put_object(
        Bucket=BUCKET, Key=remote._key("v0003", "model.keras"), Body=b"flipped bits"
    )
    with pytest.raises(StoreError, match="checksum"):
        sync.sync()
    assert cache.latest() == "v0001" and not (cache.base / "v0003").exists()
    assert not list(cache.base.glob(".staging-*"))

    # A good version moves the pointer: followed.  LATEST only moves forward on upload ...
    v4 = publish_copy(local)
    remote.upload(v4)
    assert sync.sync() == "v0004" and cache.resolve("LATEST", verify=True).version == "v0004"
    assert remote.upload(local.resolve("v0001")) is False
    assert remote.latest()[0] == "v0004"
    # ... and an explicit set_latest (a rollback) is followed backwards.
    assert remote.set_latest("v0001") is True
    assert sync.sync() == "v0001" and cache.latest() == "v0001"


@pytest.mark.redis_server
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_two_workers_with_separate_caches_follow_one_store_with_no_failed_job(
    s3: dict[str, str], tiny_store: ModelStore, tmp_path: Path
) -> None:
    local = copy_store(tiny_store, tmp_path / "trainer")
    remote = _remote("workers")
    remote.upload(local.resolve("v0001"))
    with RedisServer.temporary() as server:
        procs, logs, names = [], [], []
        for i in range(2):
            env = {
                **env_for(server.url, tiny_store),
                **s3,
                "MODEL_DIR": str(tmp_path / f"cache{i}"),  # empty: filled from the store
                "MODEL_STORE_URL": f"s3://{BUCKET}/workers",
            }
            logs.append(tmp_path / f"w{i}.log")
            names.append(f"s3-worker-{i}")
            procs.append(start_worker(env, names[-1], logs[-1]))
        try:
            wait_for_workers(server.url, procs, logs, names=names)
            conn = connect(server.url)
            queue = get_queue(QUEUE_INTERACTIVE, conn)
            asked = iter(range(100000))

            def ask(n: int) -> list[Any]:
                payloads = [
                    make_payload([("r", f"A fine film, take {next(asked)}.")]) for _ in range(n)
                ]
                ids = enqueue_payloads(queue, payloads)
                return list(collect(conn, ids, timeout=60).values())

            first = ask(10)
            assert {o.result["model_version"] for o in first if o.result} == {"tiny/v0001"}
            remote.upload(publish_copy(local))  # v0002 -> both caches -> both workers
            # A corrupt upload on top is refused by both; they keep serving v0002.
            seen: dict[str, set[str]] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                outcomes = ask(6)
                assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
                for log in logs:
                    for line in log.read_text(errors="replace").splitlines():
                        if '"job_done"' in line:
                            event = json.loads(line)
                            seen.setdefault(event["worker"], set()).add(event["model_version"])
                if all("tiny/v0002" in seen.get(n, set()) for n in names):
                    break
            assert all("tiny/v0002" in seen.get(n, set()) for n in names), seen
            v3 = publish_copy(local)
            remote.upload(v3)
            remote.client.put_object(
                Bucket=BUCKET, Key=remote._key("v0003", "vocab.json"), Body=b"{}"
            )
            # Wait for both refusals (logged by each worker), while jobs keep being answered.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                outcomes = ask(4)
                assert all(o.result and o.result["model_version"] == "tiny/v0002" for o in outcomes)
                if all('"model_reload_failed"' in log.read_text() for log in logs):
                    break
            assert all('"model_reload_failed"' in log.read_text() for log in logs)
            failed = conn.zcard(f"rq:registry:failed:{QUEUE_INTERACTIVE}")
            assert failed == 0
            for i in range(2):
                cache = ModelStore(tmp_path / f"cache{i}", "tiny")
                assert cache.versions() == ["v0001", "v0002"] and cache.latest() == "v0002"
        finally:
            stop_processes(procs, timeout=15)


def test_after_a_remote_rollback_a_fresh_trainer_publishes_the_next_number(
    s3: dict[str, str], tiny_store: ModelStore, corpus: dict[str, Path], tmp_path: Path
) -> None:
    """The k8s trainer starts from an empty scratch folder each run.  After LATEST went back
    from v0002 to v0001 on the shared store, it must number its version after the store's
    newest (v0003), not after what its scratch copy holds (it would take v0002's name and be
    refused at every run)."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.test_feedback_loop import TRAINER_ENV, trainer_argv

    remote = _remote("rolled-back")
    local = copy_store(tiny_store, tmp_path / "publisher")
    remote.upload(local.resolve("v0001"))
    remote.upload(publish_copy(local))
    assert remote.set_latest("v0001") is True  # the remote rollback
    with RedisServer.temporary() as server:
        env = {
            **env_for(server.url, tiny_store),
            **s3,
            **TRAINER_ENV,
            "MODEL_DIR": str(tmp_path / "scratch"),
            "MODEL_STORE_URL": f"s3://{BUCKET}/rolled-back",
        }
        done = subprocess.run(
            [sys.executable, "-m", "worker.training.commands.trainer", *trainer_argv(corpus)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert remote.versions() == ["v0001", "v0002", "v0003"]  # published as the next number
    assert remote.latest()[0] == "v0003"


def test_workers_with_a_verify_key_load_only_versions_the_trainer_signed(
    s3: dict[str, str], tiny_store: ModelStore, tmp_path: Path
) -> None:
    """Write access to the bucket is not enough to make a worker load a model: unsigned,
    wrongly signed and tampered versions are refused before any file is fetched."""
    from shared.signing import SIGNATURE_FILE, generate

    private, public = generate()
    other_private, _ = generate()
    unsigned = RemoteStore(f"s3://{BUCKET}/signed", "tiny", keys=(None, None))
    impostor = RemoteStore(f"s3://{BUCKET}/signed", "tiny", keys=(other_private, None))
    trainer = RemoteStore(f"s3://{BUCKET}/signed", "tiny", keys=(private, None))
    worker = RemoteStore(f"s3://{BUCKET}/signed", "tiny", keys=(None, public))
    local = copy_store(tiny_store, tmp_path / "publisher")
    unsigned.upload(local.resolve("v0001"))
    with pytest.raises(StoreError, match="not signed"):
        RemoteSync(worker, ModelStore(tmp_path / "c1", "tiny")).sync()
    impostor.upload(publish_copy(local))  # v0002, signed by the wrong key
    with pytest.raises(StoreError, match="does not match"):
        worker.download("v0002", ModelStore(tmp_path / "c2", "tiny"))
    signed = publish_copy(local)  # v0003, signed by the trainer
    trainer.upload(signed)
    cache = ModelStore(tmp_path / "c3", "tiny")
    assert RemoteSync(worker, cache).sync() == "v0003"
    assert (cache.base / "v0003" / SIGNATURE_FILE).is_file()
    # Someone with write access swaps the signed manifest for one of their own: refused.
    manifest = json.loads((signed.path / "manifest.json").read_text())
    manifest["files"]["vocab.json"] = "0" * 64
    worker.client.put_object(
        Bucket=BUCKET, Key="signed/tiny/v0003/manifest.json", Body=json.dumps(manifest).encode()
    )
    with pytest.raises(StoreError, match="does not match"):
        worker.download("v0003", ModelStore(tmp_path / "c4", "tiny"))
