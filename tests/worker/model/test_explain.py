"""Explanations are a faithful decomposition of the model's log-odds."""

import keras
import numpy as np
import pytest

from tests.conftest import random_model
from worker.model.cnn import CONV_PREFIX, LENGTH_BLEND_LAYER, LOGITS_LAYER, HParams
from worker.model.explain import Explainer

HP = HParams(embed_dim=8, filters=6, kernel_sizes=(1, 2, 3, 5), buckets=256)


def _model(arch: str) -> keras.Model:
    return random_model(arch, vocab_size=40, hp=HP, blend=(2.0, 0.7, 0.0), seed=1)


def test_weights_sum_to_the_log_odds_without_biases() -> None:
    # Biases are zero at initialisation, so gradient x input is exact for ReLU + max-pool, and
    # the n-gram shares are exact by construction: the weights add up to the log-odds.
    # kim_ngram_crops: a short and a long row in one batch, each weighed by its own blend (the
    # blend's intercepts are the part no token explains).
    long_row = np.random.default_rng(2).integers(1, 40, size=60).tolist()
    rows = [[5, 9, 3, 3, 7, 2], [11], [4, 4, 4, 8, 12, 30, 31, 2, 5, 6, 7], long_row]
    for arch in ("kim", "kim_ngram", "kim_ngram_crops"):
        model = _model(arch)
        intercepts = (
            model.get_layer(LENGTH_BLEND_LAYER).get_weights()[0][:, 3]
            if arch == "kim_ngram_crops"
            else np.zeros(2)
        )
        explainer = Explainer(model)
        for row, e in zip(rows, explainer.explain_ids(rows), strict=True):
            assert len(e.token_weights) == len(row)
            sign = 1 if e.label == "positive" else -1
            intercept = intercepts[int(len(row) > HP.short_tokens)]
            np.testing.assert_allclose(
                sum(e.token_weights), sign * (e.log_odds - intercept), rtol=1e-4, atol=1e-5
            )


@pytest.mark.parametrize("arch", ["kim_ngram", "kim_ngram_crops"])
def test_scores_match_the_model_and_phrases_are_spans(arch: str) -> None:
    model = _model(arch)
    explainer = Explainer(model)
    rows = [[5, 9, 3, 3, 7, 2, 8, 8, 1], [6, 7], list(range(1, 40)) * 2]
    explained = explainer.explain_ids(rows)
    for row, e in zip(rows, explained, strict=True):
        probs = np.asarray(model(np.array([row], dtype=np.int32)))[0]
        np.testing.assert_allclose([e.scores["negative"], e.scores["positive"]], probs, atol=1e-5)
        for start, end, weight in e.phrases:
            assert 0 <= start < end <= len(row) and end - start >= 2 and weight > 0
        spans = [(s, t) for s, t, _ in e.phrases]
        assert all(a[1] <= b[0] or b[1] <= a[0] for a in spans for b in spans if a != b)


def _reference_top_words(tokens: list[str], weights: list[float], k: int) -> list[list[object]]:
    """The definition: sum weights per token string, keep the k largest by magnitude."""
    totals: dict[str, float] = {}
    for token, weight in zip(tokens, weights, strict=True):
        totals[token] = totals.get(token, 0.0) + weight
    ranked = sorted(totals.items(), key=lambda item: -abs(item[1]))[:k]
    return [[token, round(weight, 4)] for token, weight in ranked]


def test_batched_results_equal_one_row_at_a_time_and_top_words_follow_the_definition() -> None:
    # The batch is processed with array operations over padded rows of mixed lengths; each row
    # must get what it gets alone, and its top words must be the per-string sums (OOV id 1 stands
    # for different strings, which stay separate).
    explainer = Explainer(_model("kim_ngram"))
    rng = np.random.default_rng(7)
    rows = [rng.integers(1, 40, size=n).tolist() for n in (1, 2, 3, 7, 30, 30, 64)]
    # Repeated words tie in the max pool: the same occurrence wins whatever the batch's shape.
    rows += [[5, 6, 7] * 4, [3] * 12, [9, 9, 2, 9, 9, 2], [1] * 20]
    tokens = [[f"oov{p}" if i == 1 else f"w{i}" for p, i in enumerate(row)] for row in rows]
    batched = explainer.explain_ids(rows, tokens=tokens, top_k=4)
    for row, toks, e in zip(rows, tokens, batched, strict=True):
        (alone,) = explainer.explain_ids([row], tokens=[toks], top_k=4)
        assert e.label == alone.label and e.phrases == alone.phrases
        np.testing.assert_allclose(e.token_weights, alone.token_weights, atol=1e-5)
        expected = _reference_top_words(toks, e.token_weights, 4)
        assert [w for w, _ in e.top_words] == [w for w, _ in expected]
        np.testing.assert_allclose([v for _, v in e.top_words], [v for _, v in expected], atol=2e-4)
    assert any(1 in row for row in rows)


def test_closed_form_equals_automatic_differentiation_with_biases() -> None:
    import tensorflow as tf

    model = _model("kim_ngram")
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.name.startswith(CONV_PREFIX) or layer.name == LOGITS_LAYER:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(scale=0.1, size=bias.shape).astype("float32")])
    explainer = Explainer(model)
    assert explainer._kim
    # No repeated token: the max pools have no ties and both methods agree position by position.
    rows = [[5, 9, 3, 6, 7, 2, 8, 0, 0], [4, 10, 11, 8, 12, 30, 31, 2, 5]]
    ids = tf.constant(rows, dtype=tf.int32)
    z_fast, tokens_fast, _ = explainer._run(ids)
    z_auto, tokens_auto, _ = tf.function(explainer._attribute)(ids)
    np.testing.assert_allclose(z_fast, z_auto, rtol=1e-5)
    np.testing.assert_allclose(tokens_fast, tokens_auto, atol=1e-5)
    # A repeated token ties a pool: the closed form credits the first occurrence, autodiff splits
    # the credit; the total is the same.
    tied = tf.constant([[5, 3, 3, 3, 7]], dtype=tf.int32)
    fast, auto = explainer._run(tied)[1], tf.function(explainer._attribute)(tied)[1]
    np.testing.assert_allclose(np.sum(fast), np.sum(auto), rtol=1e-5)
