"""One trainer cycle in-process (fakeredis for the votes): a calibrated champion gets a
calibrated challenger, gated on the answers the worker would give."""

from __future__ import annotations

import time
from pathlib import Path

import fakeredis

from shared import announcements, feedback
from shared.config import Settings
from shared.store import ModelStore
from tests.conftest import copy_store, tiny_config
from worker.training.calibrate import calibrate_version
from worker.training.gate import Tolerances
from worker.training.trainer import TrainerSettings, run_cycle


def test_a_calibrated_champion_gets_a_calibrated_challenger(
    tiny_store: ModelStore, corpus: dict[str, Path], tmp_path: Path
) -> None:
    store = copy_store(tiny_store, tmp_path / "models")
    calibrate_version(store, "v0001", corpus["train"], 0.6)  # v0002: the calibrated champion
    conn = fakeredis.FakeRedis()
    feedback.record(
        conn,
        feedback.Feedback(
            text="Zorblax quibbleflop.",
            label="negative",
            predicted="positive",
            model_version="tiny/v0002",
            user=feedback.hash_user("tg:9"),
            message="tg:x",
            source="bot",
            at=time.time(),
        ),
    )
    settings = Settings(model_dir=store.root, model_name=store.name)
    tsettings = TrainerSettings(
        repeat=40, report_limit=0, tolerances=Tolerances(test=0.05, short=0.05, feedback=0.5)
    )
    base = tiny_config(corpus)
    decision = run_cycle(conn, settings, tsettings, base)
    assert decision.published and decision.version == "v0003" and decision.champion == "v0002"
    manifest = store.resolve("v0003").manifest
    assert manifest["calibration"]["uncertain_below"] == 0.6
    assert manifest["decision"]["numbers"]["test"]["n"] == 200
    assert announcements.last_decision(conn)["version"] == "v0003"
    assert store.versions() == ["v0001", "v0002", "v0003"]
