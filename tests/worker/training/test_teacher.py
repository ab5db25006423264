"""The GPU teacher's path, end to end on a synthetic aclImdb: pack -> teacher (tiny, on the CPU)
-> soft labels -> a distilled training run.  The teacher runs as the GPU machine runs it: a
separate process, PyTorch and NumPy only."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.datasets import DataError
from tests.conftest import TINY_HPARAMS, synthetic_review
from worker.training.teacher import (
    FIT,
    HOLDOUT,
    TEST,
    UNSUP,
    read_soft_labels,
    text_key,
)
from worker.training.teacher_pack import build_pack

pytest.importorskip("torch", reason="the teacher needs PyTorch (.ci/run installs the CPU build)")

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "worker" / "training" / "teacher_gpu.py"


def make_imdb(root: Path, seed: int = 0) -> tuple[Path, str]:
    """A synthetic aclImdb tree; returns it and a test text also planted among the unlabelled."""
    rng = random.Random(seed)
    base = root / "aclImdb"
    n = 0

    def write(split: str, folder: str, text: str, rating: int) -> None:
        nonlocal n
        path = base / split / folder / f"{n}_{rating}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        n += 1

    for split, count in (("train", 200), ("test", 60)):
        for i in range(count):
            label = i % 2
            write(split, "pos" if label else "neg", synthetic_review(rng, label), 9 if label else 2)
    test_text = (base / "test" / "pos").glob("*.txt").__next__().read_text(encoding="utf-8")
    for i in range(150):
        write("train", "unsup", synthetic_review(rng, i % 2), 0)
    write("train", "unsup", test_text, 0)  # IMDB repeats texts across splits: so does this
    return base, test_text


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("teacher")
    data, planted = make_imdb(tmp)
    pack = tmp / "pack.npz"
    meta = build_pack(data, pack, seed=1, vocab_size=400, max_len=64)
    soft = tmp / "soft.npz"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--pack", str(pack), "--out", str(soft), "--tiny"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return {"data": data, "pack": pack, "meta": meta, "soft": soft, "planted": planted,
            "stdout": run.stdout, "tmp": tmp}  # fmt: skip


def test_the_pack_holds_every_role_and_no_evaluation_text_among_the_unlabelled(
    taught: dict[str, Any],
) -> None:
    meta = taught["meta"]
    assert meta["reviews"] == {"fit": 180, "holdout": 20, "unsup": 150, "test": 60}
    assert meta["sources"]["unsup"]["left_out_as_evaluation_text"] == 1
    with np.load(taught["pack"], allow_pickle=False) as z:
        role, label, key = z["role"], z["label"], z["key"]
        assert z["ids"].dtype == np.uint16 and len(z["offsets"]) == len(role) + 1
        assert (label[role == UNSUP] == -1).all() and set(label[role == FIT].tolist()) == {0, 1}
        assert text_key(taught["planted"]) in set(key[role == TEST].tolist())
        assert text_key(taught["planted"]) not in set(key[role == UNSUP].tolist())
        assert z["counts"].sum() == len(z["ids"])


def test_the_teacher_imports_nothing_but_numpy_torch_and_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"numpy", "torch"}


def test_the_teacher_learns_and_writes_soft_labels_for_fit_holdout_and_unlabelled(
    taught: dict[str, Any],
) -> None:
    soft = read_soft_labels(taught["soft"])
    assert len(soft.prob) == 180 + 20 + 150 and len(soft.holdout) == 20
    teacher = soft.meta["teacher"]
    assert teacher["accuracy"]["holdout"] >= 0.8, teacher["classifier"]["epochs"]
    assert teacher["accuracy"]["test"] >= 0.8  # reported, never used for a choice
    assert teacher["lm"]["steps"] >= 1 and teacher["classifier"]["best_epoch"] >= 1
    events = [json.loads(line)["event"] for line in taught["stdout"].splitlines()]
    assert {"pack", "epoch", "done"} <= set(events)  # progress as it goes
    with np.load(taught["soft"], allow_pickle=False) as z:
        assert TEST not in set(z["role"].tolist()) and HOLDOUT in set(z["role"].tolist())


def test_a_run_distils_from_the_soft_labels_and_validates_on_the_teachers_holdout(
    taught: dict[str, Any],
) -> None:
    from shared.config import Settings
    from shared.store import ModelStore
    from worker.training.config import TrainConfig
    from worker.training.train import train

    store = ModelStore(taught["tmp"] / "store", "m")
    config = TrainConfig(
        data=taught["data"],
        arch="kim_ngram_crops",
        vocab_size=300,
        epochs=2,
        hparams=TINY_HPARAMS,
        seed=5,  # not the pack's: validation is still the teacher's holdout
        soft_labels=taught["soft"],
    )
    result = train(config, Settings(), store)
    training = result.manifest["training"]
    assert training["val_seed"] == 1 and training["validation_reviews"] == 20
    used = training["soft_labels"]
    assert used["unlabelled_found"] == 150 and 0 < used["unlabelled_used"] <= 150
    assert used["network_reviews"] == min(used["unlabelled_used"], 180)
    assert used["sha256"] and used["teacher"]["accuracy"]["holdout"] >= 0.8
    assert result.metrics["test"]["accuracy"] >= 0.8
    # the unlabelled review that repeats a test review is not trained on, by word2vec either
    assert training["pretrained_embeddings"]["unlabelled"] == 150


def test_soft_labels_made_for_another_split_are_refused(taught: dict[str, Any]) -> None:
    from shared.config import Settings
    from worker.training.config import TrainConfig
    from worker.training.data import prepare

    config = TrainConfig(data=taught["data"], val_fraction=0.2, soft_labels=taught["soft"])
    with pytest.raises(DataError, match="holdout"):
        prepare(config, Settings())
    bad = taught["tmp"] / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="soft-label"):
        read_soft_labels(bad)
