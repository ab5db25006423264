"""``sentiment-sweep``: the Keras blog preset and our architectures on a tiny corpus; a sweep
killed mid-run resumes without redoing or losing runs."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from worker.training.commands.sweep import main
from worker.training.sweep import PRESETS, configurations


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_keras_blog_preset_is_the_36_run_grid() -> None:
    preset = PRESETS["keras-blog"]
    configs = configurations(preset["grid"])
    assert len(configs) == 36
    assert {c["layers"] for c in configs} == {1, 2, 3}
    assert {c["units"] for c in configs} == {16, 32, 64}
    assert {c["activation"] for c in configs} == {"relu", "tanh"}
    assert {c["loss"] for c in configs} == {"binary_crossentropy", "mse"}
    assert len(configurations(preset["grid"], sample=5, seed=1)) == 5


def test_a_killed_sweep_resumes_without_redoing_a_run(
    corpus: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "blog"
    argv = ["--preset", "keras-blog", "--data", str(corpus["train"]), "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.training.commands.sweep", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if (out / "results.csv").exists() and len(rows(out)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = rows(out)
    assert 2 <= len(before) < 36
    assert main([*argv, "--max-runs", "2"]) == 0
    after = rows(out)
    assert len(after) == len(before) + 2
    assert len({r["params"] for r in after}) == len(after)  # nothing run twice
    assert [r["params"] for r in after[: len(before)]] == [r["params"] for r in before]
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in after)
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == len(after) + 1 and "val accuracy" in table
    assert (out / "results.png").stat().st_size > 1000
    assert "best" in capsys.readouterr().out


def test_a_sweep_begun_before_the_sentence_column_resumes_in_its_own_columns(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    import csv
    import json

    out = tmp_path / "old"
    out.mkdir()
    first = {"activation": "relu", "batch_size": 512, "epochs": 4, "layers": 1}
    first |= {"loss": "binary_crossentropy", "units": 16, "words": 10000}
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as fh:
        fh.write("run,params,val_accuracy,val_loss,seconds\n")  # the columns before
        csv.writer(fh).writerow([1, json.dumps(first, sort_keys=True), 0.81, 0.45, 3.0])
    argv = ["--preset", "keras-blog", "--data", str(corpus["train"]), "--out", str(out)]
    assert main([*argv, "--max-runs", "1"]) == 0
    with (out / "results.csv").open(newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["run", "params", "val_accuracy", "val_loss", "seconds"]
    assert len(lines) == 3 and all(len(line) == 5 for line in lines)
    assert lines[2][1] != lines[1][1]  # the finished run was not done again


def test_a_grid_over_one_of_our_architectures(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "kim"
    argv = [
        "--arch",
        "kim_ngram",
        "--data",
        str(corpus["train"]),
        "--out",
        str(out),
        "--grid",
        "filters=8,16",
        "--set",
        "embed_dim=16",
        "--set",
        "kernel_sizes=1|2",
        "--set",
        "epochs=1",
        "--set",
        "vocab_size=200",
    ]
    assert main(argv) == 0
    found = rows(out)
    assert sorted(json.loads(r["params"])["filters"] for r in found) == [8, 16]
    assert all(float(r["val_accuracy"]) > 0.5 for r in found)  # the tiny corpus is easy
    assert main(argv) == 0 and len(rows(out)) == 2  # done: nothing to redo
