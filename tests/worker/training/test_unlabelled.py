"""The unlabelled reviews a run uses: ``--limit`` caps them too, with a seeded sample."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from worker.training.config import TrainConfig
from worker.training.unlabelled import read_unlabelled


def _read(unsup: Path, **config: Any) -> list[str]:
    prepared: Any = SimpleNamespace(
        data_path=unsup, soft=None, evaluation_keys=frozenset()
    )  # its path; no teacher
    return read_unlabelled(TrainConfig(unsup_data=unsup, **config), prepared).texts


def test_limit_caps_the_unlabelled_reviews_with_a_seeded_sample(tmp_path: Path) -> None:
    unsup = tmp_path / "unsup.txt"
    lines = [f"unlabelled review number {i}" for i in range(50)]
    unsup.write_text("\n".join(lines) + "\n")

    assert _read(unsup) == lines  # no limit: all of them
    assert _read(unsup, limit=80) == lines  # a limit above the count changes nothing
    sample = _read(unsup, limit=10, seed=1)
    assert len(sample) == 10 and len(set(sample)) == 10
    assert sample == [t for t in lines if t in sample]  # a subset, in the file's order
    assert _read(unsup, limit=10, seed=1) == sample  # seeded: the same run reads the same
    assert _read(unsup, limit=10, seed=2) != sample
    prepared: Any = SimpleNamespace(data_path=unsup, soft=None, evaluation_keys=frozenset())
    result = read_unlabelled(TrainConfig(unsup_data=unsup, limit=10), prepared)
    assert len(result.tokens) == 10 and result.tokens[0][:2] == ["unlabelled", "review"]


def test_an_unlabelled_review_with_an_evaluation_text_is_left_out(tmp_path: Path) -> None:
    from worker.training.teacher import text_key

    unsup = tmp_path / "unsup.txt"
    lines = [f"unlabelled review number {i}" for i in range(5)]
    unsup.write_text("\n".join(lines) + "\n")
    prepared: Any = SimpleNamespace(
        data_path=unsup, soft=None, evaluation_keys=frozenset({text_key(lines[2])})
    )
    assert read_unlabelled(TrainConfig(unsup_data=unsup), prepared).texts == lines[:2] + lines[3:]
