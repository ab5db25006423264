"""Semi-supervised region embeddings on CPU: what the 50k unlabelled reviews add, used the way
Johnson & Zhang (2015b, "tv-embeddings") use them, next to the served model.

    python bench/region_embeddings.py [--version LATEST] [--tv-epochs 2] [--epochs 10]

1. Prepares the data exactly as the version's training run did (its seed: same vocabulary, same
   movie-grouped validation split; checked against the version's vocabulary fingerprint).
2. Learns a region embedding without labels on the fitting + unlabelled reviews (never
   validation or test text): the bag of a 5-token region -> ReLU 100-d, trained to predict the
   words of the 5-token regions on either side (negative sampling, the most frequent words left
   out as targets).
3. Trains a CNN on the frozen region features (1x1 convolution, ReLU, global max pool) on the
   labelled fitting reviews; the epoch is chosen on validation.
4. Prints, side by side, validation and test accuracy of the version, the region CNN, and the two
   blended (logistic regression on their log-odds fitted on validation; its validation figure is
   10-fold cross-validated). The test split is only reported.

Takes about 13 minutes on 2 cores (most of it step 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.infra import accuracy, blend, model_arguments, reproduce_split
from shared.config import Settings

REGION = 5
STOP_WORDS = 60  # the most frequent ids are not prediction targets (function words)
NEGATIVES = 20
BATCH = 4096


def train_region_embedding(
    docs: list[list[int]], vocab_size: int, dim: int, epochs: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(E, b) of the region embedding relu(sum of E over a 5-token region + b)."""
    import tensorflow as tf
    from tqdm import tqdm

    tf.random.set_seed(seed)
    parts = [np.zeros(2 * REGION, np.int32)]
    for d in docs:  # PADs between documents: no region or context crosses one
        parts += [np.asarray(d, np.int32), np.zeros(2 * REGION, np.int32)]
    flat = np.concatenate(parts)
    starts = np.flatnonzero(flat[: len(flat) - 2 * REGION] != 0)
    counts = np.bincount(flat, minlength=vocab_size).astype(np.float64)
    counts[: 2 + STOP_WORDS] = 0
    noise = counts**0.75 / (counts**0.75).sum()
    noise_logits = tf.constant(np.log(noise + 1e-12)[None, :], tf.float32)
    targets = np.ones(vocab_size, np.float32)
    targets[: 2 + STOP_WORDS] = 0
    flat_t, targets_t = tf.constant(flat), tf.constant(targets)
    init = np.random.default_rng(seed).normal(0, 0.1, (vocab_size, dim)).astype(np.float32)
    emb, bias = tf.Variable(init), tf.Variable(tf.zeros([dim]))
    out, out_bias = tf.Variable(tf.zeros([vocab_size, dim])), tf.Variable(tf.zeros([vocab_size]))
    variables = [emb, bias, out, out_bias]
    optimizer = tf.keras.optimizers.Adam(1e-3)
    region = tf.range(REGION)
    context = tf.concat([tf.range(-REGION, 0), tf.range(REGION, 2 * REGION)], 0)
    sampler = tf.random.Generator.from_seed(seed)

    @tf.function
    def step(at: Any) -> Any:
        words = tf.gather(flat_t, at[:, None] + region[None, :])
        near = tf.gather(flat_t, at[:, None] + context[None, :])
        keys = sampler.uniform_full_int([2], tf.int64)
        neg = tf.random.stateless_categorical(noise_logits, BATCH * NEGATIVES, keys, tf.int32)
        neg = tf.reshape(neg, [BATCH, NEGATIVES])
        weight = tf.gather(targets_t, near)
        with tf.GradientTape() as tape:
            real = tf.cast(words > 0, tf.float32)[:, :, None]
            h = tf.nn.relu(tf.reduce_sum(tf.gather(emb, words) * real, 1) + bias)
            pos = tf.einsum("bd,bkd->bk", h, tf.gather(out, near)) + tf.gather(out_bias, near)
            negs = tf.einsum("bd,bkd->bk", h, tf.gather(out, neg)) + tf.gather(out_bias, neg)
            loss = tf.reduce_sum(weight * tf.nn.softplus(-pos)) / tf.maximum(
                tf.reduce_sum(weight), 1.0
            ) + tf.reduce_mean(tf.nn.softplus(negs)) * NEGATIVES / (2 * REGION)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    steps = int(epochs * len(starts) / BATCH)
    bar = tqdm(range(steps), desc="region embedding (unlabelled)", unit="step")
    for s in bar:
        loss = step(tf.constant(rng.choice(starts, BATCH).astype(np.int32)))
        if s % 200 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}")
    return emb.numpy(), bias.numpy()


def region_cnn(emb: np.ndarray, bias: np.ndarray, maps: int, steps: int) -> Any:
    """Frozen region features -> 1x1 convolution (ReLU) -> masked global max pool -> logits
    (PAD handled by the served model's own layers)."""
    import keras
    import tensorflow as tf
    from keras import layers

    from worker.model.layers import ApplyMask, MaskedGlobalMaxPool, PadMask

    ids = keras.Input((None,), dtype="int32")
    mask = PadMask()(ids)
    e = layers.Embedding(emb.shape[0], emb.shape[1], trainable=False, weights=[emb])(ids)
    e = ApplyMask()([e, mask])
    window = np.tile(np.eye(emb.shape[1], dtype=np.float32)[None], (REGION, 1, 1))
    regions = layers.Lambda(
        lambda t: tf.nn.relu(
            tf.nn.conv1d(tf.pad(t, [[0, 0], [0, REGION - 1], [0, 0]]), window, 1, "VALID") + bias
        )
    )(e)
    x = layers.Dense(maps, activation="relu")(regions)
    x = layers.Dropout(0.5)(MaskedGlobalMaxPool()([x, mask]))
    model = keras.Model(ids, layers.Dense(2)(x))
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.05)
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def log_odds(forward: Any, rows: list[list[int]]) -> np.ndarray:
    """Log-odds of ``rows`` through a traced forward pass (as the worker runs its model)."""
    from worker.model.predictor import run_batched

    logits = run_batched(forward, rows, batch_size=256)[0].astype(np.float64)
    return logits[:, 1] - logits[:, 0]


def main() -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(parser, settings)
    parser.add_argument("--tv-epochs", type=float, default=2.0, help="region embedding epochs")
    parser.add_argument("--dim", type=int, default=100, help="region embedding size")
    parser.add_argument("--maps", type=int, default=500, help="the region CNN's feature maps")
    parser.add_argument("--epochs", type=int, default=10, help="the region CNN's epochs")
    args, published, config, prepared = reproduce_split(parser, settings)
    seed = config.seed

    import keras
    from tqdm import tqdm

    from worker.model.batching import encode_texts, length_batches, pad_batch
    from worker.model.predictor import batched_probs, load_predictor, make_forward
    from worker.training.train import log_odds as prob_log_odds
    from worker.training.unlabelled import read_unlabelled

    unlabelled = read_unlabelled(config, prepared)
    unsup = encode_texts(unlabelled.tokens, prepared.vocab, prepared.max_len, config.head_fraction)
    started = time.perf_counter()
    emb, bias = train_region_embedding(
        prepared.fit_rows + [e.ids for e in unsup],
        len(prepared.vocab),
        args.dim,
        args.tv_epochs,
        seed,
    )
    tv_seconds = time.perf_counter() - started

    keras.utils.set_random_seed(seed)
    fit, y_fit = prepared.fit_rows, prepared.y_fit
    val, y_val = prepared.val_rows, prepared.y_val
    test, y_test = prepared.test_rows, prepared.y_test
    steps = args.epochs * (len(fit) // 64 + 1)
    model = region_cnn(emb, bias, args.maps, steps)
    forward_cnn = make_forward(model)
    rng = np.random.default_rng(seed)
    best: tuple[float, int, np.ndarray] | None = None
    started = time.perf_counter()
    for epoch in tqdm(range(args.epochs), desc="region CNN (labelled)", unit="epoch"):
        order = length_batches([len(r) for r in fit], 64)
        rng.shuffle(order)
        for idx in order:
            model.train_on_batch(pad_batch([fit[i] for i in idx]), y_fit[idx])
        z = log_odds(forward_cnn, val)
        score = accuracy(z, y_val)
        if best is None or score > best[0]:
            best = (score, epoch, z)
            best_weights = model.get_weights()
    cnn_seconds = time.perf_counter() - started
    assert best is not None
    model.set_weights(best_weights)
    z_val_cnn, z_test_cnn = best[2], log_odds(forward_cnn, test)

    predictor = load_predictor(published)
    forward = make_forward(predictor.model)

    def version_log_odds(rows: list[list[int]]) -> np.ndarray:
        return prob_log_odds(batched_probs(forward, rows, batch_size=256))

    def region_log_odds(rows: list[list[int]]) -> np.ndarray:
        return log_odds(forward_cnn, rows)

    z_val_v, z_test_v = version_log_odds(val), version_log_odds(test)
    # What the region CNN would cost next to the version: forward passes over the test reviews,
    # interleaved, median of 3 (a served region branch would add about this much).
    times: dict[str, list[float]] = {"version": [], "region": []}
    for _ in range(3):
        for name, run in (("version", version_log_odds), ("region", region_log_odds)):
            t = time.perf_counter()
            run(test)
            times[name].append(time.perf_counter() - t)
    t_version, t_region = (statistics.median(times[k]) for k in ("version", "region"))
    print(
        f"\n{predictor.model_version} (seed {seed}); region embedding {args.dim}-d, "
        f"{args.tv_epochs:g} epochs over {len(fit) + len(unsup):,} reviews in {tv_seconds:.0f} s; "
        f"region CNN {args.maps} maps, best epoch {best[1] + 1}/{args.epochs}, {cnn_seconds:.0f} s"
    )
    print(f"\n{'model':<44} {'validation':>10} {'test':>8}")
    print(
        f"{predictor.model_version + ' as served':<44} {accuracy(z_val_v, y_val):>10.4f} "
        f"{accuracy(z_test_v, y_test):>8.4f}"
    )
    print(
        f"{'region CNN alone':<44} {accuracy(z_val_cnn, y_val):>10.4f} "
        f"{accuracy(z_test_cnn, y_test):>8.4f}"
    )
    for name, xv, xt in (
        (f"{predictor.model_version} refitted on validation", z_val_v[:, None], z_test_v[:, None]),
        (
            f"{predictor.model_version} + region CNN blended",
            np.c_[z_val_v, z_val_cnn],
            np.c_[z_test_v, z_test_cnn],
        ),
    ):
        cv, test_acc, coef = blend(xv, y_val, xt, y_test, seed)
        print(f"{name:<44} {cv:>10.4f} {test_acc:>8.4f}   coefficients {coef}")
    print(
        f"\nforward over the {len(test):,} test reviews (median of 3): version {t_version:.1f} s, "
        f"region CNN {t_region:.1f} s ({t_region / t_version:.2f}x the version)"
    )
    print("(validation: plain accuracy for single models, 10-fold cross-validated for blends)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
