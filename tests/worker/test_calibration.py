"""Calibration: the Platt fit, ECE, the manifest's calibration, and ``sentiment-calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.store import ModelStore, StoreError
from tests.conftest import copy_store, publish_copy
from worker.model.served import Calibration, explain_reviews, load_served
from worker.training.calibrate import ece, fit_platt


def test_the_platt_fit_recovers_a_known_temperature_and_ignores_the_sets_class_mix() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.6, 3, 40000)
    true = 1 / (1 + np.exp(-(z / 2.0 - 0.3)))  # the truth: T = 2, bias -0.3
    y = (rng.random(len(z)) < true).astype(int)
    # A validation set that happens to lean one way: keep every negative, half the positives
    # (by movie, ours was 54% positive). The fit is class-balanced, so it answers as if both
    # classes were equally likely: the set's prior odds (log 1/2 here, beyond what the truth's
    # balance already implies) do not leak into the bias.
    keep = (y == 0) | (rng.random(len(y)) < 0.5)
    t, b = fit_platt([z[keep]], [y[keep]])
    t_all, b_all = fit_platt([z], [y])
    assert t == pytest.approx(2.0, rel=0.05) and t_all == pytest.approx(2.0, rel=0.05)
    assert b == pytest.approx(b_all, abs=0.06)  # the same answer whatever the mix
    calibrated = 1 / (1 + np.exp(-(z / t_all + b_all)))
    raw = 1 / (1 + np.exp(-z))
    assert ece(calibrated, y) < 0.02 < ece(raw, y)


@pytest.mark.parametrize(
    "raw",
    [
        {"temperature": 0},
        {"temperature": -1},
        {"bias": float("nan")},
        {"uncertain_below": 1.5},
        {"short": {"temperature": 0, "max_tokens": 10}},
    ],
)
def test_a_bad_calibration_in_a_manifest_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(StoreError):
        Calibration.from_manifest({"calibration": raw})


def test_calibration_moves_scores_flags_uncertain_and_reorients_words(
    tiny_store: ModelStore, tmp_path: Path
) -> None:
    store = copy_store(tiny_store, tmp_path)

    def calibrated(folder: Path, manifest: dict[str, Any]) -> None:
        manifest["calibration"] = {
            "temperature": 1.0,
            "bias": 0.0,
            "uncertain_below": 0.6,
            # Short texts: flattened and pushed hard towards negative.
            "short": {"max_tokens": 12, "temperature": 50.0, "bias": -3.0},
        }

    publish_copy(store, edit=calibrated)
    raw, cal = load_served(store, "v0001"), load_served(store, "v0002")
    texts = [{"id": "a", "text": "A superb, wonderful, brilliant film."}]
    (before,) = explain_reviews(raw, texts, 5)
    (after,) = explain_reviews(cal, texts, 5)
    assert before["label"] == "positive" and not before["uncertain"]
    assert after["label"] == "negative" and after["scores"]["negative"] > 0.9
    # The words now speak against the (new) label: same words, opposite signs, 1/T the size.
    got = dict((w, v) for w, v in after["top_words"])
    for word, weight in before["top_words"]:
        assert got[word] == pytest.approx(-weight / 50.0, rel=1e-6)
    # A long review uses the long-text pair (identity here): unchanged, with the flag computed.
    long_text = " ".join(["A superb film with a brilliant cast and a wonderful story."] * 3)
    (long_before,) = explain_reviews(raw, [{"id": "b", "text": long_text}], 5)
    (long_after,) = explain_reviews(cal, [{"id": "b", "text": long_text}], 5)
    assert long_after["scores"] == pytest.approx(long_before["scores"])
    assert long_after["uncertain"] == (max(long_after["scores"].values()) < 0.6)


def test_sentiment_calibrate_publishes_a_loadable_calibrated_version(
    tiny_store: ModelStore, corpus: dict[str, Path], tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    from worker.training.commands.calibrate import main

    store = copy_store(tiny_store, tmp_path)
    monkeypatch.setenv("MODEL_DIR", str(store.root))
    monkeypatch.setenv("MODEL_NAME", store.name)
    assert main(["--data", str(corpus["train"]), "--uncertain-below", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "ECE" in out and "published tiny/v0002" in out
    published = store.resolve("LATEST", verify=True)
    calibration = published.manifest["calibration"]
    assert calibration["from_version"] == "v0001" and calibration["uncertain_below"] == 0.7
    # The tiny corpus has no review over 48 tokens: that length class is left as it is.
    assert calibration["validation"]["before"]["full"] == {"n": 0}
    assert (calibration["temperature"], calibration["bias"]) == (1.0, 0.0)
    assert "no validation texts of that length" in out
    assert (published.path / "reliability.png").stat().st_size > 1000
    assert load_served(store).calibration.uncertain_below == 0.7
    assert store.versions() == ["v0001", "v0002"]  # the source is kept
    # Other data than the version was trained on is refused (its validation split would differ).
    assert main(["--model", "v0001", "--data", str(corpus["test"])]) == 2
    assert "not the data" in capsys.readouterr().err
