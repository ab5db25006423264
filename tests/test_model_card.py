"""The model card is the served version's manifest in words: it cannot drift from it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from shared.model_card import CARD_PATH, render
from shared.store import ModelStore
from tests.conftest import REPO

SHIPPED = ModelStore(REPO / "models", "sentiment-cnn")


def test_the_committed_card_is_the_served_versions_card() -> None:
    served = SHIPPED.resolve()
    card = (REPO / CARD_PATH).read_text(encoding="utf-8")
    assert card == render(served), f"stale: run sentiment-models card -o {CARD_PATH}"
    assert card.startswith(f"# Model card: {served.model_version}\n")


def test_the_card_names_use_data_evaluation_limitations_with_the_manifests_figures() -> None:
    served = SHIPPED.resolve()
    card = render(served)
    for section in (
        "## Intended use",
        "## Out of scope",
        "## Training data",
        "## Evaluation",
        "## Calibration and confidence",
        "## Limitations and known failure modes",
        "## How to retrain",
    ):
        assert f"\n{section}\n" in card
    m = served.manifest
    accuracy = m["metrics"]["test"]["accuracy"]
    assert f"| {100 * accuracy:.2f}% |" in card
    assert f"| {m['data']['train']['n']:,} |" in card and m["data"]["train"]["fingerprint"] in card
    assert "English" in card and f"truncated to {m['sequence_length']} tokens" in card


def test_a_changed_manifest_changes_the_card_and_the_check_fails(tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(SHIPPED.root / SHIPPED.name, root / SHIPPED.name, dirs_exist_ok=True)
    store = ModelStore(root, SHIPPED.name)
    card = tmp_path / "card.md"
    env_cmd = [sys.executable, "-m", "shared.commands.models", "card"]
    env = {"MODEL_DIR": str(root), "MODEL_NAME": SHIPPED.name, "PATH": "/usr/bin:/bin"}
    wrote = subprocess.run([*env_cmd, "-o", str(card)], env=env, cwd=REPO, capture_output=True)
    assert wrote.returncode == 0, wrote.stderr
    check = subprocess.run([*env_cmd, "--check", "-o", str(card)], env=env, cwd=REPO)
    assert check.returncode == 0
    published = store.resolve()
    manifest = published.path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["metrics"]["test"]["accuracy"] = 0.5
    manifest.write_text(json.dumps(data))
    assert "| 50.00% |" in render(store.resolve())
    stale = subprocess.run(
        [*env_cmd, "--check", "-o", str(card)], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert stale.returncode == 1 and "is not the card" in stale.stderr
    # Without -o, --check reads the docs' card (it cannot pass by printing one).
    bare = subprocess.run([*env_cmd, "--check"], env=env, cwd=tmp_path, capture_output=True)
    assert bare.returncode == 1


def test_a_version_trained_on_other_data_is_not_called_imdb(tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(SHIPPED.root / SHIPPED.name, root / SHIPPED.name, dirs_exist_ok=True)
    store = ModelStore(root, SHIPPED.name)
    manifest = store.resolve().path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["data"]["train"]["path"] = "my_train.csv"
    data["data"]["test"]["path"] = "my_test.csv"
    manifest.write_text(json.dumps(data))
    card = render(store.resolve())
    assert "Maas et al." not in card and "IMDB test split" not in card
    assert "`my_train.csv`" in card and "test file `my_test.csv`" in card
