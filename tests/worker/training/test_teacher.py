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
    # IMDB repeats texts across its splits: so does this, among the unlabelled and labelled
    write("train", "unsup", test_text, 0)
    write("train", "pos", test_text, 9)
    return base, test_text


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("teacher")
    data, planted = make_imdb(tmp)
    pack = tmp / "pack.npz"
    meta = build_pack(data, pack, seed=1, vocab_size=400, max_len=64)
    return {"data": data, "pack": pack, "meta": meta, "planted": planted, "tmp": tmp}


@pytest.fixture(scope="module")
def taught(packed: dict[str, Any]) -> dict[str, Any]:
    pytest.importorskip(
        "torch", reason="the teacher needs PyTorch (.ci/run installs the CPU build)"
    )
    soft = packed["tmp"] / "soft.npz"
    run = subprocess.run(  # --tiny: a fixed amount of work, no deadline, whatever the machine
        [sys.executable, str(SCRIPT), "--pack", str(packed["pack"]), "--out", str(soft), "--tiny"],
        capture_output=True,
        text=True,
        cwd=packed["tmp"],
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return {**packed, "soft": soft, "stdout": run.stdout}


def test_the_pack_holds_every_role_and_no_evaluation_text_where_the_teacher_learns(
    packed: dict[str, Any],
) -> None:
    meta, planted = packed["meta"], text_key(packed["planted"])
    reviews, sources = meta["reviews"], meta["sources"]
    dropped = sources["train"]["fit_left_out_as_evaluation_text"]
    assert reviews["holdout"] + reviews["fit"] + dropped == 201
    assert reviews["unsup"] == 150 and reviews["test"] == 60
    assert sources["unsup"]["left_out_as_evaluation_text"] == 1
    with np.load(packed["pack"], allow_pickle=False) as z:
        role, label, key, offsets = z["role"], z["label"], z["key"], z["offsets"]
        assert z["ids"].dtype == np.uint16 and len(offsets) == len(role) + 1
        assert (label[role == UNSUP] == -1).all() and set(label[role == FIT].tolist()) == {0, 1}
        assert planted in set(key[role == TEST].tolist())
        assert planted not in set(key[np.isin(role, (FIT, UNSUP))].tolist())
        learnt = np.isin(role, (FIT, UNSUP))  # token counts: of what the teacher learns from
        assert z["counts"].sum() == np.diff(offsets)[learnt].sum() < len(z["ids"])
    # without the test split in the pack, its texts are still left out of the rest
    bare = packed["tmp"] / "bare.npz"
    meta = build_pack(packed["data"], bare, seed=1, vocab_size=400, max_len=64, with_test=False)
    assert meta["reviews"]["test"] == 0 and meta["reviews"]["unsup"] == 150
    with np.load(bare, allow_pickle=False) as z:
        assert planted not in set(z["key"].tolist())


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
    reviews = taught["meta"]["reviews"]
    assert len(soft.prob) == reviews["fit"] + reviews["holdout"] + 150
    assert len(soft.holdout) == reviews["holdout"]
    with np.load(taught["pack"], allow_pickle=False) as z:  # each probability is its review's
        labelled = np.isin(z["role"], (FIT, HOLDOUT))
        by_key = np.array([soft.prob[k] for k in z["key"][labelled].tolist()])
        assert ((by_key > 0.5) == z["label"][labelled]).mean() >= 0.9
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
    training, reviews = result.manifest["training"], taught["meta"]["reviews"]
    assert training["val_seed"] == 1 and training["validation_reviews"] == reviews["holdout"]
    assert training["train_reviews"] == reviews["fit"]  # the same repeated text left out
    used = training["soft_labels"]
    soft = read_soft_labels(taught["soft"])
    with np.load(taught["soft"], allow_pickle=False) as z:  # what the teacher is sure of
        p = z["prob"][z["role"] == UNSUP].astype(float)
    sure = p[np.abs(p - 0.5) >= 0.3]
    assert used["unlabelled_found"] == 150 and used["unlabelled_used"] == len(sure) > 0
    assert used["positive_share"] == pytest.approx((sure > 0.5).mean(), abs=1e-4)
    assert used["network_reviews"] == min(len(sure), reviews["fit"])
    assert used["sha256"] == soft.provenance()["sha256"]
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


def _teacher_module() -> Any:
    """teacher_gpu.py as a module (it is a script, run by path on the GPU machine)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("teacher_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_perturbations_have_their_norm_spare_padding_and_vat_finds_the_worst_direction() -> (
    None
):
    torch = pytest.importorskip("torch")
    t = _teacher_module()
    torch.manual_seed(0)
    cfg = t.Config.tiny()
    model = t.build(torch, 50, np.ones(50), cfg)
    model.train()
    lengths = torch.tensor([7, 4])
    e = model.embed_ids(torch.randint(2, 50, (2, 7))).detach().requires_grad_()
    loss = model.classify(e, lengths).sum()
    r = t.adversarial(torch, loss, e, lengths, cfg.eps)
    assert r.flatten(1).norm(dim=1).tolist() == pytest.approx([cfg.eps, cfg.eps], rel=1e-4)
    assert r[1, 4:].abs().sum() == 0  # nothing on padding
    p, r1 = t.vat_perturbation(torch, model, e, lengths, cfg, d=torch.randn_like(e))
    assert r1.flatten(1).norm(dim=1).tolist() == pytest.approx([cfg.eps, cfg.eps], rel=1e-4)

    def moved(r: Any) -> float:
        with torch.no_grad():
            return float(t.kl(torch, p, model.classify(e + r, lengths, dropout=False)))

    # the power iteration's direction moves the answer more than random ones of the same norm
    worst = moved(r1)
    chance = [moved(cfg.eps * t.unit(torch, torch.randn_like(e), lengths)) for _ in range(10)]
    assert worst > max(chance)
