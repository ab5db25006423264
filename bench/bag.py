"""Does the n-gram bag get its due?  The recipe's bag against the literature's, next to the model.

    python bench/bag.py [--version LATEST]

Mesnil et al. (2014) reach 0.9187 with NB-LR on binarised uni+bi+trigrams of every token of
every review (no vocabulary cap, no truncation); reproduced here at 0.9179 on the 25k training
reviews (``../shared/FINDINGS.md``).  The recipe's bag reads the model's token ids: a 30k-word
vocabulary, head+tail truncation at the 95th percentile length, unigrams and hashed bigrams.
On the version's own split (``bench.infra.reproduce_split``: the same fitting, validation and
test reviews), each bag is fitted on the fitting reviews and shown alone, blended with the
version's CNN alone (in place of its review bag) and added to the whole served model; blends
are fitted on validation (10-fold cross-validated there), the test split only reports.  About
6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.infra import accuracy, blend, model_arguments, reproduce_split
from shared.config import Settings


def nb_logreg(x_fit: object, y: np.ndarray, c: float) -> object:
    """Mesnil et al.'s NB-LR on binarised features: a scorer of feature matrices (log-odds)."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    x = (x_fit > 0).astype(np.float32)  # type: ignore[operator,attr-defined]
    p = np.asarray(x[y == 1].sum(axis=0)).ravel() + 1.0
    q = np.asarray(x[y == 0].sum(axis=0)).ravel() + 1.0
    r = sp.diags(np.log((p / p.sum()) / (q / q.sum())))
    clf = LogisticRegression(C=c, max_iter=1000, solver="liblinear").fit(x @ r, y)
    w, b = clf.coef_.ravel(), float(clf.intercept_[0])
    return lambda m: ((m > 0).astype(np.float32) @ r) @ w + b


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(parser, settings)
    _, published, config, prepared = reproduce_split(parser, settings)

    from sklearn.feature_extraction.text import CountVectorizer

    from worker.model.batching import pad_batch
    from worker.model.cnn import LOGITS_LAYER, HParams
    from worker.model.ngrams import bag_scores, fit_nb_logreg
    from worker.model.predictor import batched_probs, load_predictor, make_forward
    from worker.training.data import load_split, movies_of, validation_split
    from worker.training.train import log_odds

    seed, hp = config.seed, HParams()
    y_fit, y_val, y_test = prepared.y_fit, prepared.y_val, prepared.y_test
    predictor = load_predictor(published)
    name = predictor.model_version
    model = predictor.model
    served = make_forward(model)
    import keras

    core = keras.Model(model.inputs, model.get_layer(LOGITS_LAYER).output)
    z, cnn = {}, {}
    for k, rows in (("val", prepared.val_rows), ("test", prepared.test_rows)):
        z[k] = log_odds(batched_probs(served, rows))
        logits = np.concatenate(
            [core.predict_on_batch(pad_batch(rows[i : i + 256])) for i in range(0, len(rows), 256)]
        )
        cnn[k] = logits[:, 1] - logits[:, 0]
    train = load_split(config.data, "train", None, seed)  # every token, for the literature's bag
    test = load_split(config.data, "test", None, seed)
    movies = movies_of(config.data, train.reviews)
    val_idx, fit_idx = validation_split(
        len(train.reviews), prepared.val_seed, config.val_fraction, movies
    )
    tokens = {
        "fit": [train.tokens[i] for i in fit_idx],
        "val": [train.tokens[i] for i in val_idx],
        "test": test.tokens,
    }
    assert (train.labels[val_idx] == y_val).all() and (train.labels[fit_idx] == y_fit).all()

    lines: list[tuple[str, float, float, float, float, float, float, float]] = []

    def add(label: str, s_val: np.ndarray, s_test: np.ndarray, seconds: float) -> None:
        with_cnn = blend(np.c_[cnn["val"], s_val], y_val, np.c_[cnn["test"], s_test], y_test, seed)
        with_all = blend(np.c_[z["val"], s_val], y_val, np.c_[z["test"], s_test], y_test, seed)
        lines.append((label, accuracy(s_val, y_val), accuracy(s_test, y_test), *with_cnn[:2],
                      *with_all[:2], seconds))  # fmt: skip

    started = time.perf_counter()
    vocab_size = len(prepared.vocab)
    table, intercept = fit_nb_logreg(prepared.fit_rows, y_fit, vocab_size, hp.buckets)
    add(
        "recipe: ids, uni + hashed bi, C=0.1",
        bag_scores(prepared.val_rows, table, vocab_size, hp.buckets) + intercept,
        bag_scores(prepared.test_rows, table, vocab_size, hp.buckets) + intercept,
        time.perf_counter() - started,
    )
    for n, cs in ((2, (0.1, 0.3)), (3, (0.1, 0.3, 1.0))):
        started = time.perf_counter()
        vectorizer = CountVectorizer(analyzer=lambda t, n=n: _ngrams(t, n), binary=True)
        x_fit = vectorizer.fit_transform(tokens["fit"])
        x_val, x_test = vectorizer.transform(tokens["val"]), vectorizer.transform(tokens["test"])
        built = time.perf_counter() - started
        for c in cs:
            started = time.perf_counter()
            score = nb_logreg(x_fit, y_fit, c)
            label = f"every token, uni..{n}-grams ({x_fit.shape[1]:,}), C={c}"
            add(label, score(x_val), score(x_test), built + time.perf_counter() - started)  # type: ignore[operator]

    cv, acc, _ = blend(z["val"][:, None], y_val, z["test"][:, None], y_test, seed)
    cnn_alone = accuracy(cnn["test"], y_test)
    print(f"\n{name} (seed {seed}): served {acc:.4f} on test (refitted on validation: {cv:.4f}); "
          f"its CNN alone {cnn_alone:.4f}")  # fmt: skip
    print(f"\n{'bag':<46}{'alone val':>10}{'test':>8}{'+CNN val':>10}{'test':>8}"
          f"{'+served val':>12}{'test':>8}{'s':>6}")  # fmt: skip
    for label, *v, s in lines:
        print(f"{label:<46}{v[0]:>10.4f}{v[1]:>8.4f}{v[2]:>10.4f}{v[3]:>8.4f}{v[4]:>12.4f}"
              f"{v[5]:>8.4f}{s:>6.0f}")  # fmt: skip
    print("(blends: validation 10-fold cross-validated, test reported; s: features + fit)")
    return 0


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [
        " ".join(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1)
    ]


if __name__ == "__main__":
    sys.exit(main())
