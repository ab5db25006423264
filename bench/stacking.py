"""Two cheap ways to stack more onto the served model's n-gram bag, measured next to it.

    python bench/stacking.py [--version LATEST] [--tails 40 80 150]

On the version's own data split (same seed, vocabulary checked, as ``bench/region_embeddings.py``
does), the test split only reported:

1. **End-of-review bags**: the verdict of a review usually sits at its end, so an NB-LR bag
   (the recipe's ``fit_nb_logreg``) fitted on the last N tokens of each fitting review, blended
   with the version's log-odds on validation.
2. **A residual CNN**: the seq2-bown-CNN idea (Johnson & Zhang 2015a) that the n-gram and
   convolution paths gain from being trained together.  The Kim CNN (word2vec-initialised on the
   fitting + unlabelled reviews, as in the recipe) is trained with the bag's out-of-fold scores
   (5 folds, calibrated) as a fixed offset on its log-odds, so it learns what the bag gets wrong;
   next to it the same CNN trained plainly.  Each is blended with the bag on validation.  Both
   CNNs see whole reviews only (the recipe adds sentence crops), so the pair is like for like.

Blends are logistic regressions on log-odds: validation 10-fold cross-validated, test reported.
Takes about 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.infra import accuracy, blend, model_arguments, reproduce_split
from shared.config import Settings

FOLDS = 5


def out_of_fold_scores(
    rows: list[list[int]], labels: np.ndarray, vocab_size: int, buckets: int, seed: int
) -> np.ndarray:
    """Each fitting review's bag log-odds from a bag fitted without it."""
    from sklearn.model_selection import StratifiedKFold

    from worker.model.ngrams import bag_scores, fit_nb_logreg

    scores = np.zeros(len(rows))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for fit, held in folds.split(np.zeros(len(rows)), labels):
        table, intercept = fit_nb_logreg([rows[i] for i in fit], labels[fit], vocab_size, buckets)
        scores[held] = bag_scores([rows[i] for i in held], table, vocab_size, buckets) + intercept
    return scores


def train_cnn(
    prepared: Any, embeddings: np.ndarray, seed: int, offsets: tuple[np.ndarray, np.ndarray] | None
) -> tuple[Any, int]:
    """The recipe's Kim CNN on whole fitting reviews, early-stopped on validation loss; with
    ``offsets`` (fitting, validation) added to its log-odds while it trains.  Returns the CNN
    alone (without offsets) and the epochs it ran."""
    import keras
    import tensorflow as tf
    from keras import layers

    from worker.model.batching import BucketedBatches, pad_batch
    from worker.model.cnn import EMBEDDING_LAYER, LOGITS_LAYER, build_model, compile_for_training
    from worker.training.config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS
    from worker.training.train import EVAL_BATCH_SIZE

    class WithOffset(BucketedBatches):
        def __init__(self, rows: Any, labels: np.ndarray, offset: np.ndarray, *a: Any, **k: Any):
            self.offset = offset.astype(np.float32)
            super().__init__(rows, labels, *a, **k)

        def __getitem__(self, index: int) -> Any:
            idx = self._batches[index]
            return (pad_batch([self.rows[i] for i in idx]), self.offset[idx]), self.labels[idx]

    keras.utils.set_random_seed(seed)
    cnn = build_model("kim", len(prepared.vocab)).trainable
    cnn.get_layer(EMBEDDING_LAYER).set_weights([embeddings])
    fit_rows, y_fit, val_rows, y_val = (
        prepared.fit_rows,
        prepared.y_fit,
        prepared.val_rows,
        prepared.y_val,
    )
    if offsets is None:
        model: Any = cnn
        train = BucketedBatches(fit_rows, y_fit, DEFAULT_BATCH_SIZE, seed=seed)
        val = BucketedBatches(val_rows, y_val, EVAL_BATCH_SIZE, seed=seed, shuffle=False)
    else:
        offset = keras.Input((), dtype="float32", name="offset")
        logits = cnn.get_layer(LOGITS_LAYER).output
        shifted = layers.Lambda(lambda t: t[0] + tf.stack([tf.zeros_like(t[1]), t[1]], axis=1))(
            [logits, offset]
        )
        model = keras.Model([cnn.inputs[0], offset], layers.Softmax()(shifted))
        train = WithOffset(fit_rows, y_fit, offsets[0], DEFAULT_BATCH_SIZE, seed=seed)
        val = WithOffset(val_rows, y_val, offsets[1], EVAL_BATCH_SIZE, seed=seed, shuffle=False)
    compile_for_training(model)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = model.fit(
        train, validation_data=val, epochs=DEFAULT_EPOCHS, callbacks=[stop], verbose=2
    )
    return cnn, len(history.history["loss"])


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(parser, settings)
    parser.add_argument(
        "--tails", type=int, nargs="+", default=[40, 80, 150], help="end-of-review lengths"
    )
    args, published, config, prepared = reproduce_split(parser, settings)

    from sklearn.linear_model import LogisticRegression

    from worker.model.cnn import HParams
    from worker.model.embeddings import word2vec_matrix
    from worker.model.ngrams import bag_scores, fit_nb_logreg
    from worker.model.predictor import batched_probs, load_predictor, make_forward
    from worker.training.train import log_odds
    from worker.training.unlabelled import read_unlabelled

    seed, hp, vocab_size = config.seed, HParams(), len(prepared.vocab)
    buckets = hp.buckets
    fit, y_fit = prepared.fit_rows, prepared.y_fit
    val, y_val = prepared.val_rows, prepared.y_val
    test, y_test = prepared.test_rows, prepared.y_test
    predictor = load_predictor(published)
    name = predictor.model_version
    forward = make_forward(predictor.model)
    z_val, z_test = (log_odds(batched_probs(forward, rows)) for rows in (val, test))
    lines: list[tuple[str, str, float, float, list[float] | str]] = []
    cv, test_acc, coef = blend(z_val[:, None], y_val, z_test[:, None], y_test, seed)
    lines.append((f"{name} refitted on validation", "blend", cv, test_acc, coef))

    for n in args.tails:
        table, intercept = fit_nb_logreg([r[-n:] for r in fit], y_fit, vocab_size, buckets)
        s_val, s_test = (
            bag_scores([r[-n:] for r in rows], table, vocab_size, buckets) + intercept
            for rows in (val, test)
        )
        alone = accuracy(s_val, y_val), accuracy(s_test, y_test)
        lines.append((f"bag of the last {n} tokens", "alone", *alone, ""))
        cv, test_acc, coef = blend(np.c_[z_val, s_val], y_val, np.c_[z_test, s_test], y_test, seed)
        lines.append((f"{name} + last-{n} bag", "blend", cv, test_acc, coef))

    started = time.perf_counter()
    table, intercept = fit_nb_logreg(fit, y_fit, vocab_size, buckets)
    bag_val, bag_test = (
        bag_scores(rows, table, vocab_size, buckets) + intercept for rows in (val, test)
    )
    oof = out_of_fold_scores(fit, y_fit, vocab_size, buckets, seed)
    calibration = LogisticRegression(C=1e4).fit(oof[:, None], y_fit)
    a, b = float(calibration.coef_[0, 0]), float(calibration.intercept_[0])
    bag_seconds = time.perf_counter() - started
    unlabelled = read_unlabelled(config, prepared)
    embeddings, _ = word2vec_matrix(
        prepared.fit_tokens + unlabelled.tokens, prepared.vocab, hp.embed_dim, seed
    )
    lines.append(("review bag", "alone", accuracy(bag_val, y_val), accuracy(bag_test, y_test), ""))
    epochs = {}
    for variant, offsets in (
        ("plain CNN", None),
        ("residual CNN", (a * oof + b, a * bag_val + b)),
    ):
        cnn, epochs[variant] = train_cnn(prepared, embeddings, seed, offsets)
        cnn_forward = make_forward(cnn)
        c_val, c_test = (log_odds(batched_probs(cnn_forward, rows)) for rows in (val, test))
        cv, test_acc, coef = blend(
            np.c_[c_val, bag_val], y_val, np.c_[c_test, bag_test], y_test, seed
        )
        lines.append((f"{variant} + review bag", "blend", cv, test_acc, coef))

    print(
        f"\n{name} (seed {seed}); out-of-fold bag scores ({FOLDS} folds) in {bag_seconds:.0f} s, "
        f"calibrated {a:.3f} x {b:+.3f}; epochs run: "
        + ", ".join(f"{k} {v}" for k, v in epochs.items())
    )
    print(f"\n{'model':<44} {'':>5} {'validation':>10} {'test':>8}")
    for label, kind, v, t, c in lines:
        print(f"{label:<44} {kind:>5} {v:>10.4f} {t:>8.4f}   {c if c else ''}")
    print("(validation: plain accuracy alone, 10-fold cross-validated for blends)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
