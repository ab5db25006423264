"""The models are exact under padding, and the in-graph n-gram bag equals its NumPy twin."""

import keras
import numpy as np
import pytest

from tests.conftest import random_model
from worker.model.cnn import ARCHITECTURES, NGRAM_BAG_LAYER, HParams, build_model
from worker.model.ngrams import bag_scores, feature_ids, fit_nb_logreg

HP = HParams(embed_dim=8, filters=4, kernel_sizes=(1, 2, 3, 5), buckets=512)


@pytest.mark.parametrize("arch", ["dense", "kim", "kim_ngram", "kim_ngram_crops"])
def test_scores_do_not_depend_on_padding(arch: str) -> None:
    model = random_model(arch, vocab_size=50, hp=HP, blend=(1.0, 0.5, 0.1), seed=0)
    short = np.array([[5, 9, 3]], dtype=np.int32)
    padded = np.array([[5, 9, 3] + [0] * 40], dtype=np.int32)
    np.testing.assert_allclose(model(short), model(padded), atol=1e-6)


def test_every_architecture_accepts_one_token_and_long_inputs() -> None:
    for arch in ARCHITECTURES:
        model = build_model(arch, vocab_size=30, hp=HP).model
        for width in (1, 700):
            out = np.asarray(model(np.ones((2, width), dtype=np.int32)))
            assert out.shape == (2, 2)
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_ngram_bag_counts_each_feature_once_and_matches_numpy() -> None:
    vocab_size, buckets = 20, 64
    rng = np.random.default_rng(1)
    table = rng.normal(size=vocab_size + buckets).astype("float32")
    table[0] = 0.0
    built = build_model("kim_ngram", vocab_size, HParams(embed_dim=4, filters=2, buckets=buckets))
    bag = built.model.get_layer(NGRAM_BAG_LAYER)
    bag.set_weights([table])
    rows = [[3, 3, 3, 4], [5, 6, 5, 6, 5], [7]]
    batch = np.array([r + [0] * (5 - len(r)) for r in rows], dtype=np.int32)
    got = np.asarray(keras.Model(built.model.inputs, bag.output)([batch])).ravel()
    np.testing.assert_allclose(got, bag_scores(rows, table, vocab_size, buckets), rtol=1e-5)
    # [3, 3, 3, 4]: unigrams {3, 4}, bigrams {(3,3), (3,4)} -> 4 features, each once.
    assert len(feature_ids(rows[0], vocab_size, buckets)) == 4


def test_nb_logreg_learns_the_direction_of_words() -> None:
    rows = [[2, 4], [2, 5], [3, 4], [3, 5]] * 10
    labels = np.array([1, 1, 0, 0] * 10)
    table, _ = fit_nb_logreg(rows, labels, vocab_size=6, buckets=16, c=1.0)
    assert table[2] > 0 > table[3] and table[0] == 0.0


def test_length_blend_weighs_short_and_long_texts_with_their_own_coefficients() -> None:
    # HP.short_tokens is 48: a 48-token text is short, a 49-token one long, whatever the padding.
    from worker.model.cnn import CROP_BAG_LAYER, LENGTH_BLEND_LAYER, LOGITS_LAYER

    model = random_model("kim_ngram_crops", vocab_size=50, hp=HP, blend=(1.0, 0.5, 0.1), seed=4)
    parts = keras.Model(
        model.inputs,
        [
            model.get_layer(LOGITS_LAYER).output,
            model.get_layer(NGRAM_BAG_LAYER).output,
            model.get_layer(CROP_BAG_LAYER).output,
            model.get_layer(LENGTH_BLEND_LAYER).output,
        ],
    )
    coef = model.get_layer(LENGTH_BLEND_LAYER).get_weights()[0]
    rng = np.random.default_rng(0)
    for n, kind in ((1, 0), (48, 0), (49, 1), (300, 1)):
        row = rng.integers(2, 50, size=n).tolist()
        batch = np.array([row + [0] * (310 - n)], dtype=np.int32)
        logits, bag, crops, blended = (np.asarray(x)[0] for x in parts([batch]))
        features = np.array([logits[1] - logits[0], bag[0], crops[0], 1.0])
        np.testing.assert_allclose(blended[1] - blended[0], features @ coef[kind], rtol=1e-4)
