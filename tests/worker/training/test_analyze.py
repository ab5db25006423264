"""sentiment-analyze on a tiny model: consistent numbers, and a report a real browser renders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.datasets import read_reviews
from shared.store import ModelStore
from tests.conftest import copy_store, publish_copy
from worker.training.analysis.report import SECTIONS, analyze

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(
    tiny_store: ModelStore, corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("analysis")
    store = copy_store(tiny_store, tmp / "models")
    publish_copy(store)  # v0002, the version compared against v0001
    reviews = list(read_reviews(corpus["test"], errors="keep"))
    known = [
        {"text": r.text, "verdict": "positive" if r.label else "negative"} for r in reviews[:20]
    ] + [{"text": "The film opens in May. It runs two hours.", "verdict": "neutral"}]
    return analyze(
        store,
        "LATEST",
        reviews,
        tmp / "out",
        compare="v0001",
        k=4,
        data_name="t",
        verdict_items=known,
    )


def test_the_verdicts_section_counts_every_text(report: tuple[Path, dict[str, Any]]) -> None:
    out, analysis = report
    verdicts = analysis["verdicts"]
    assert verdicts["n"] == 21 and 0 <= verdicts["macro_f1"] <= 1
    rows = {r["verdict"]: r for r in verdicts["rows"]}
    assert sum(r["support"] for r in rows.values()) == 21 and rows["neutral"]["support"] == 1
    for r in rows.values():  # each true verdict's texts are all answered as something
        assert sum(r[f"as {v}"] for v in rows) == r["support"]
    assert "id='verdicts'" in (out / "report.html").read_text(encoding="utf-8")


def test_every_section_is_there_with_consistent_counts(
    report: tuple[Path, dict[str, Any]],
) -> None:
    out, analysis = report
    n = analysis["n"]
    assert n >= 100 and set(SECTIONS) <= set(analysis)
    assert json.loads((out / "analysis.json").read_text()) == analysis
    evaluation = analysis["training"]["evaluation"]
    assert np.sum(evaluation["confusion_matrix"]) == n
    errors = analysis["training"]["errors"]
    assert errors["total"] == errors["false_positive"] + errors["false_negative"]
    assert errors["total"] == round(n * (1 - evaluation["accuracy"]))
    assert analysis["training"]["history"]["epochs"]  # from the version's history.json
    population = analysis["population"]
    assert 0 < sum(population["explained_variance"]) <= 1 and len(population["sentences"]) == 3
    clusters = analysis["clusters"]
    assert sum(c["size"] for c in clusters["clusters"]) == n  # a partition
    assert (
        len(clusters["clusters"]) == clusters["k"]
        and str(clusters["k"]) in clusters["silhouette_by_k"]
    )
    for feature in analysis["data_exploration"]["features"].values():
        assert sum(b["count"] for b in feature["bins"]) == n, feature["feature"]
        assert -1 <= feature["spearman_rho"] <= 1 and feature["sentence"]
    assert any("rating" in note for note in analysis["data_exploration"]["notes"])  # CSV: none
    items = analysis["samples"]["items"]
    assert [i["group"] for i in items] == ["highest loss"] * 4 + ["random"] * 4
    assert items[0]["loss"] >= max(i["loss"] for i in items[4:])
    assert all(len(i["tokens"]) == len(i["weights_positive"]) for i in items)
    comparison = analysis["comparison"]
    assert comparison["versions"] == ["tiny/v0002", "tiny/v0001"]
    parts = ("both_right", "only_first_right", "only_second_right", "both_wrong")
    assert sum(comparison[k] for k in parts) == n
    assert comparison["mean_loss"][0] == pytest.approx(comparison["mean_loss"][1])  # same weights
    # Per length bin: the bins partition the samples; single sentences come first; a copy of a
    # version gains nothing anywhere.
    by_length = comparison["by_length"]
    assert by_length[0]["texts"] == "single sentences" and by_length[0]["n"] > 0
    assert sum(row["n"] for row in by_length[1:]) == n
    for row in by_length:
        assert row["gain (points)"] == pytest.approx(0.0)
        assert row["accuracy tiny/v0002"] == row["accuracy tiny/v0001"]
    for name in analysis["images"].values():
        assert (out / name).stat().st_size > 1000


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's)")
def test_the_report_renders_in_a_real_headless_browser(
    report: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, analysis = report
    url = (out / "report.html").resolve().as_uri()
    common = [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []  # no console errors (nor any console output)
    for section in (
        "training",
        "population",
        "clusters",
        "data_exploration",
        "samples",
        "comparison",
    ):
        assert f'id="{section}"' in dom.stdout, section
    assert dom.stdout.count('src="data:image/png;base64,') == len(analysis["images"])
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1200,2400", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] > 1000 and float(pixels[..., :3].std()) > 0.05  # not blank
