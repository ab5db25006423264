"""A training run on a tiny corpus publishes a version the loader accepts and that makes sense."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.config import Settings
from shared.store import ModelStore, StoreError
from tests.conftest import TINY_HPARAMS, copy_store, tiny_config
from worker.model.predictor import load_predictor
from worker.training import train as train_job
from worker.training.commands import train as train_cli
from worker.training.config import TrainConfig


def test_published_version_explains_itself(tiny_store: Any) -> None:
    version = tiny_store.resolve("LATEST", verify=True)
    files = {p.name for p in version.path.iterdir()}
    assert {
        "model.keras",
        "vocab.json",
        "manifest.json",
        "metrics.json",
        "history.json",
        "training_curves.png",
        "confusion_matrix.png",
    } <= files
    m = version.manifest
    assert m["architecture"] == "kim_ngram" and m["labels"] == ["negative", "positive"]
    assert m["preprocessing"]["version"] == 1 and m["vocab"]["size"] <= 200
    assert m["data"]["train"]["n"] == 600 and len(m["data"]["train"]["fingerprint"]) == 16
    assert m["training"]["validation_reviews"] == 60
    metrics = json.loads((version.path / "metrics.json").read_text())
    test = metrics["test"]
    assert sum(map(sum, test["confusion_matrix"])) == test["n"] == 200
    assert set(test["per_class"]) == {"negative", "positive"}
    assert test["accuracy"] > 0.8  # the synthetic corpus is easy: a broken model scores ~0.5
    assert {"cnn_only", "ngram_only"} == set(metrics["test_components"])
    history = json.loads((version.path / "history.json").read_text())
    assert len(history["epochs"]) == m["training"]["epochs_run"] and history["batches"]


def test_loaded_predictor_gets_direction_and_negation(tiny_predictor: Any) -> None:
    good, bad, negated = tiny_predictor.predict_texts(
        ["A wonderful superb film, loved it", "An awful boring mess", "the plot was not awful"]
    )
    assert good.label == "positive" and bad.label == "negative"
    assert abs(sum(good.scores.values()) - 1) < 1e-5
    assert negated.scores["positive"] > bad.scores["positive"]


def test_training_is_reproducible_with_a_seed(corpus: dict[str, Path], tmp_path: Path) -> None:
    # The served recipe's defaults: word2vec initialisation, crops, both bags, the blends.
    config = TrainConfig(
        data=corpus["train"],
        no_test=True,
        vocab_size=100,
        epochs=1,
        hparams=TINY_HPARAMS,
        seed=7,
        publish=False,
    )
    assert config.arch == "kim_ngram_crops" and config.pretrain == "word2vec"
    first = train_job.train(config, Settings(model_dir=tmp_path))
    second = train_job.train(config, Settings(model_dir=tmp_path))
    assert first.metrics["validation"]["loss"] == pytest.approx(
        second.metrics["validation"]["loss"], rel=1e-4
    )
    blends = [r.manifest["training"]["ngram_branch"]["blend"] for r in (first, second)]
    for kind in ("short", "long"):
        assert blends[0][kind] == pytest.approx(blends[1][kind], rel=1e-4)


def test_word2vec_gives_the_same_vectors_every_run() -> None:
    # Enough text for gensim to hand several jobs to its threads per epoch: with more than one
    # thread the order of updates, hence the vectors, changed from run to run.
    import random

    from shared.vocab import Vocabulary
    from tests.conftest import synthetic_review
    from worker.model.embeddings import word2vec_matrix

    rng = random.Random(4)
    texts = [synthetic_review(rng, i % 2).lower().split() for i in range(6000)]
    vocab = Vocabulary.build(texts, 200)
    first, _ = word2vec_matrix(texts, vocab, 16, seed=3)
    second, _ = word2vec_matrix(texts, vocab, 16, seed=3)
    np.testing.assert_array_equal(first, second)


def test_cli_refuses_to_publish_below_min_accuracy(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    common = [
        "--data",
        str(corpus["train"]),
        "--test-data",
        str(corpus["test"]),
        "--arch",
        "dense",
        "--vocab-size",
        "100",
        "--epochs",
        "1",
        "--embed-dim",
        "8",
        "--model-name",
        "m",
    ]
    assert train_cli.main(common) == 0
    store = ModelStore(tmp_path, "m")
    assert store.latest() == "v0001"
    assert train_cli.main([*common, "--min-accuracy", "0.999"]) == 3
    assert store.versions() == ["v0001"] and store.latest() == "v0001"


def test_cli_reports_bad_data_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("review,sentiment\nnice,positive\nhmm,perhaps\n")
    assert train_cli.main(["--data", str(bad), "--no-test", "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:3: unknown label 'perhaps'" in err and "Traceback" not in err


def test_loader_refuses_a_swapped_vocabulary(tiny_store: Any, tmp_path: Path) -> None:
    copy = copy_store(tiny_store, tmp_path / "copy")
    version = copy.resolve("LATEST")
    vocab = json.loads((version.path / "vocab.json").read_text())
    vocab["tokens"] = vocab["tokens"][:-1]
    from shared.vocab import Vocabulary

    Vocabulary(vocab["tokens"]).save(version.path / "vocab.json")
    with pytest.raises(StoreError, match="checksum"):
        load_predictor(copy.resolve("LATEST"))
    with pytest.raises(StoreError, match="vocabulary does not match"):
        load_predictor(copy.resolve("LATEST"), verify=False)


def test_loader_refuses_a_corrupt_model(tiny_store: Any, tmp_path: Path) -> None:
    copy = copy_store(tiny_store, tmp_path / "copy")
    version = copy.resolve("LATEST")
    (version.path / "model.keras").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(StoreError, match="cannot load model"):
        load_predictor(copy.resolve("LATEST"), verify=False)


def test_predictions_are_identical_alone_or_batched(tiny_predictor: Any) -> None:
    texts = ["loved it", "an awful boring mess of a film " * 20, "superb"]
    together = tiny_predictor.predict_texts(texts)
    alone = [tiny_predictor.predict_texts([t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.scores["positive"], b.scores["positive"], atol=1e-5)


def test_served_recipe_on_a_tiny_corpus_publishes_a_loadable_version(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    # The served recipe (kim_ngram_crops, word2vec on labelled + unlabelled reviews, pseudo-
    # labelled crops) end to end on the synthetic corpus: sentence crops, two tables, a
    # length-gated blend, a version workers load.
    import csv
    import random

    from tests.conftest import synthetic_review

    unsup = tmp_path / "unsup.csv"
    rng = random.Random(9)
    with unsup.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review"])
        writer.writerows([synthetic_review(rng, i % 2)] for i in range(300))
    config = dataclasses.replace(
        tiny_config(corpus),
        arch="kim_ngram_crops",
        pretrain="word2vec",
        unsup_data=unsup,
        pseudo_label=True,
        epochs=3,
        seed=5,
    )
    result = train_job.train(config, Settings(model_dir=tmp_path, model_name="recipe"))
    assert result.published is not None
    m = ModelStore(tmp_path, "recipe").resolve("LATEST", verify=True).manifest
    assert m["architecture"] == "kim_ngram_crops"
    branch = m["training"]["ngram_branch"]
    # Every fitting review has at least one sentence of 3+ tokens.
    assert branch["crops"] >= m["training"]["train_reviews"] == 540
    assert set(branch["blend"]) == {"short", "long", "short_tokens"}
    assert len(branch["blend"]["short"]) == 4 and branch["blend"]["short"][0] != 1.0  # fitted
    embeddings = m["training"]["pretrained_embeddings"]
    assert embeddings["method"].startswith("word2vec") and embeddings["unlabelled"] == 300
    pseudo = branch["pseudo_labelled"]
    assert pseudo["of"] == 300 and 0 < pseudo["reviews"] <= 300 and pseudo["crops"] > 0
    assert {"cnn_only", "ngram_only", "crops_ngram_only"} == set(result.metrics["test_components"])
    assert result.metrics["test"]["accuracy"] > 0.8
    from worker.model.served import explain_reviews, load_served

    served = load_served(ModelStore(tmp_path, "recipe"))  # as a worker loads it
    good, bad = explain_reviews(
        served,
        [{"id": "a", "text": "A wonderful superb film, loved it"}, {"id": "b", "text": "Awful."}],
        top_k=3,
    )
    assert good["label"] == "positive" and bad["label"] == "negative"
    assert (
        good["top_words"][0][1] > 0
        and bad["top_words"] == [["awful", pytest.approx(bad["top_words"][0][1])]]
        and bad["top_words"][0][1] > 0
    )
