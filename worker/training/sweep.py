"""Hyper-parameter sweeps on the validation split: a grid (or a random sample of it), resumable.

Two families of runs:

* ``multihot``: the Keras blog's network — a review as a multi-hot vector of the ``words`` most
  frequent words, ``layers`` Dense layers of ``units`` with ``activation``, a sigmoid output,
  trained with ``loss`` (binary cross-entropy or MSE) and RMSprop; the ``keras-blog`` preset is
  its 36-run grid (1/2/3 layers x 16/32/64 units x relu/tanh x BCE/MSE);
* any of our architectures (``--arch``): every grid key is a ``TrainConfig`` field or a
  hyper-parameter (``embed_dim``, ``filters``, ``kernel_sizes``, ...), trained by the served
  recipe without publishing.

Every run is scored on the validation split carved from the training data exactly as training
carves it (seed, fraction), never on the test split.  Each finished run is appended to
``results.csv`` at once (flushed and fsynced), so a sweep killed at any point resumes where it
stopped: runs already in the file are skipped.  At the end it writes ``results.md`` (runs sorted
by validation accuracy) and ``results.png``.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.progress import progress as progress_bar

log = structlog.get_logger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "keras-blog": {
        "family": "multihot",
        "grid": {
            "layers": [1, 2, 3],
            "units": [16, 32, 64],
            "activation": ["relu", "tanh"],
            "loss": ["binary_crossentropy", "mse"],
        },
        "fixed": {"words": 10000, "epochs": 4, "batch_size": 512},
    },
    "kim-ngram": {
        "family": "kim_ngram",
        "grid": {"filters": [32, 64], "embed_dim": [32, 48], "learning_rate": [0.001, 0.002]},
        "fixed": {},
    },
    # What the unlabelled reviews bring to the served recipe: word2vec initialisation and
    # pseudo-labelled sentence crops, each on and off (validation reviews and sentences).
    "served": {
        "family": "kim_ngram_crops",
        "grid": {"pretrain": ["none", "word2vec"], "pseudo_label": [False, True]},
        "fixed": {},
    },
}
FIELDS = ("run", "params", "val_accuracy", "val_loss", "val_sentence_accuracy", "seconds")


def configurations(
    grid: dict[str, Sequence[Any]], sample: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Every combination of the grid, in a fixed order (or a seeded random sample of them)."""
    keys = sorted(grid)
    combos = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]
    if sample is not None and sample < len(combos):
        # A reproducible sample of configurations, not a secret (bandit B311 does not apply).
        combos = random.Random(seed).sample(combos, sample)  # nosec B311
    return combos


def run_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


@dataclass
class Split:
    fit_texts: list[list[str]]
    y_fit: np.ndarray
    val_texts: list[list[str]]
    y_val: np.ndarray
    cache: dict[int, Any] = field(default_factory=dict)


def validation_split(data: Path, limit: int | None, seed: int, val_fraction: float) -> Split:
    """Tokenized training reviews, split into fit and validation exactly as training splits."""
    from worker.training.data import load_split, movies_of
    from worker.training.data import validation_split as carve

    split = load_split(data, "train", limit, seed)
    val, fit = carve(len(split.reviews), seed, val_fraction, movies_of(data, split.reviews))
    return Split(
        [split.tokens[i] for i in fit],
        split.labels[fit],
        [split.tokens[i] for i in val],
        split.labels[val],
    )


def run_multihot(split: Split, params: dict[str, Any], seed: int) -> tuple[float, float]:
    """The Keras blog's multi-hot dense network; (validation accuracy, validation loss)."""
    import keras

    from shared.vocab import Vocabulary

    keras.utils.set_random_seed(seed)
    words = int(params["words"])
    if words not in split.cache:  # the same inputs for every run of a sweep
        vocab = Vocabulary.build(split.fit_texts, words)
        split.cache[words] = (len(vocab), *_multihot_pair(vocab, split))
    width, x_fit, x_val = split.cache[words]

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self, x: Any, y: np.ndarray, size: int) -> None:
            super().__init__()
            self.x, self.y, self.size = x, y.astype(np.float32), size

        def __len__(self) -> int:
            return int(np.ceil(self.x.shape[0] / self.size))

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            part = slice(i * self.size, (i + 1) * self.size)
            return self.x[part].toarray(), self.y[part]

    model = keras.Sequential([keras.Input((width,))])
    for _ in range(int(params["layers"])):
        model.add(keras.layers.Dense(int(params["units"]), activation=params["activation"]))
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    model.compile(optimizer="rmsprop", loss=params["loss"], metrics=["accuracy"])
    size = int(params["batch_size"])
    model.fit(Batches(x_fit, split.y_fit, size), epochs=int(params["epochs"]), verbose=0)
    loss, accuracy = model.evaluate(Batches(x_val, split.y_val, size), verbose=0)
    return float(accuracy), float(loss)


def _multihot_pair(vocab: Any, split: Split) -> tuple[Any, Any]:
    from scipy import sparse

    def multihot(texts: list[list[str]]) -> Any:
        rows: list[int] = []
        cols: list[int] = []
        for r, tokens in enumerate(texts):
            ids = {i for i in vocab.encode(tokens, None).ids if i > 1}
            rows.extend([r] * len(ids))
            cols.extend(ids)
        shape = (len(texts), len(vocab))
        return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)

    return multihot(split.fit_texts), multihot(split.val_texts)


def run_architecture(
    arch: str, data: Path, params: dict[str, Any], base: dict[str, Any]
) -> tuple[float, float, float | None]:
    """One run of our recipe (not published); (validation accuracy, validation loss, accuracy
    on one sentence of each validation review where the architecture fits sentences)."""
    import dataclasses

    from shared.config import Settings
    from worker.training.config import TrainConfig
    from worker.training.train import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config_kw = {k: v for k, v in {**base, **params}.items() if k in fields}
    hparams = {k: v for k, v in {**base, **params}.items() if k not in fields}
    config = TrainConfig(
        data=data, arch=arch, no_test=True, publish=False, hparams=hparams, **config_kw
    )
    result = train(config, Settings.from_env())
    val = result.metrics["validation"]
    sentences = result.metrics.get("validation_sentences")
    return (
        float(val["accuracy"]),
        float(val["loss"]),
        float(sentences["accuracy"]) if sentences else None,
    )


def done_runs(results: Path) -> dict[str, dict[str, str]]:
    if not results.exists():
        return {}
    with results.open(newline="", encoding="utf-8") as fh:
        return {row["params"]: row for row in csv.DictReader(fh) if row.get("val_accuracy")}


def sweep(
    family: str,
    grid: dict[str, Sequence[Any]],
    fixed: dict[str, Any],
    data: Path,
    out: Path,
    limit: int | None = None,
    sample: int | None = None,
    max_runs: int | None = None,
    seed: int = 1,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) a sweep; returns every run's row, best first."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    configs = configurations(grid, sample, seed)
    done = done_runs(results)
    todo = [c for c in configs if run_key({**fixed, **c}) not in done]
    if max_runs is not None:
        todo = todo[:max_runs]
    split = validation_split(data, limit, seed, val_fraction) if family == "multihot" else None
    new = not results.exists()
    fields: Sequence[str] = FIELDS
    if not new:  # resume in the file's own columns (a sweep begun before a column was added)
        with results.open(newline="", encoding="utf-8") as fh:
            fields = next(csv.reader(fh), []) or FIELDS
    with results.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        bar = progress_bar(
            total=len(configs),
            initial=len(configs) - len(todo),
            desc=f"sweep {family}",
            unit=" runs",
            disable=not progress,
        )
        for params in todo:
            full = {**fixed, **params}
            started = time.monotonic()
            sentences = None
            if split is not None:
                accuracy, loss = run_multihot(split, full, seed)
            else:
                base = {"limit": limit, "seed": seed, "val_fraction": val_fraction, **fixed}
                accuracy, loss, sentences = run_architecture(family, data, params, base)
            row = {
                "run": len(done) + 1,
                "params": run_key(full),
                "val_accuracy": round(accuracy, 4),
                "val_loss": round(loss, 4),
                "val_sentence_accuracy": round(sentences, 4) if sentences is not None else "",
                "seconds": round(time.monotonic() - started, 1),
            }
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())  # a killed sweep keeps every finished run
            done[str(row["params"])] = {k: str(v) for k, v in row.items()}
            log.info("sweep_run_done", **row)
            bar.update(1)
        bar.close()
    rows = sorted(done_runs(results).values(), key=lambda r: -float(r["val_accuracy"]))
    write_report(rows, out, family)
    return rows


def write_report(rows: list[dict[str, Any]], out: Path, family: str) -> None:
    """``results.md`` (a table, best first) and ``results.png`` (accuracy of every run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k in json.loads(r["params"])})
    sentences = any(r.get("val_sentence_accuracy") for r in rows)
    lines = [
        f"# Sweep: {family} ({len(rows)} runs, validation split)",
        "",
        "| rank | "
        + " | ".join(keys)
        + " | val accuracy | val loss | "
        + ("val sentences | " if sentences else "")
        + "seconds |",
        "|" + "---|" * (len(keys) + 4 + sentences),
    ]
    for rank, r in enumerate(rows, 1):
        params = json.loads(r["params"])
        cells = " | ".join(str(params.get(k, "")) for k in keys)
        extra = f"{float(r['val_sentence_accuracy']):.4f} | " if sentences else ""
        lines.append(
            f"| {rank} | {cells} | {float(r['val_accuracy']):.4f} | "
            f"{float(r['val_loss']):.4f} | {extra}{r['seconds']} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.25), 4))
    ordered = sorted(rows, key=lambda r: int(r["run"]))
    ax.bar(range(len(ordered)), [float(r["val_accuracy"]) for r in ordered])
    accs = [float(r["val_accuracy"]) for r in rows] or [0.5]
    ax.set_ylim(max(0.0, min(accs) - 0.02), min(1.0, max(accs) + 0.01))
    ax.set_xlabel("run")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{family}: {len(rows)} runs")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=90)
    plt.close(fig)


def parse_grid(items: Sequence[str]) -> Iterator[tuple[str, list[Any]]]:
    """``key=v1,v2`` options into grid entries (numbers parsed, ``1|2|3`` for tuples)."""
    for item in items:
        key, _, raw = item.partition("=")
        if not key or not raw:
            raise ValueError(f"--grid wants key=v1,v2,..., got {item!r}")
        values: list[Any] = []
        for text in raw.split(","):
            if text.lower() in ("true", "false"):
                values.append(text.lower() == "true")
                continue
            if "|" in text:
                values.append(tuple(int(x) for x in text.split("|")))
                continue
            try:
                values.append(int(text))
            except ValueError:
                try:
                    values.append(float(text))
                except ValueError:
                    values.append(text)
        yield key, values
