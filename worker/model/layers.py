"""Custom Keras layers that make the models exact under padding, plus the n-gram bag branch.

All layers are registered for serialization, so ``keras.models.load_model`` restores them (the
worker imports this module before loading).  Inputs are int token ids with ``0`` = PAD.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PACKAGE = "review_sentiment"
#: Multiplier of the bigram hash; ids are < 2**31, so the product fits int64.
BIGRAM_HASH = 1_000_003


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadMask(keras.layers.Layer):
    """ids -> float mask (1 for real tokens, 0 for PAD)."""

    def call(self, ids: Any) -> Any:
        return ops.cast(ops.not_equal(ids, 0), self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RightPad(keras.layers.Layer):
    """Append ``n`` PAD ids so every convolution window that starts on a real token exists.

    With PAD embeddings zeroed and windows starting on PAD ignored, the output no longer depends
    on how much padding a batch has: a 15-word message gives the same scores alone or padded to 600.
    """

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n

    def call(self, ids: Any) -> Any:
        return ops.pad(ids, [[0, 0], [0, self.n]]) if self.n else ids

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n": self.n}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ApplyMask(keras.layers.Layer):
    """x * mask[..., None]: zero the vectors at PAD positions."""

    def call(self, inputs: list[Any]) -> Any:
        x, mask = inputs
        return x * ops.expand_dims(ops.cast(mask, x.dtype), -1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedGlobalMaxPool(keras.layers.Layer):
    """Max over the windows of a 'valid' convolution that start on a real token.

    Inputs: ``[conv (B, L-k+1, F) >= 0 after ReLU, mask (B, L)]``.  Non-negative activations make
    multiplying by the mask equivalent to excluding those windows.
    """

    def call(self, inputs: list[Any]) -> Any:
        conv, mask = inputs
        width = ops.shape(conv)[1]
        window_mask = ops.cast(mask[:, :width], conv.dtype)
        return ops.max(conv * ops.expand_dims(window_mask, -1), axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedMean(keras.layers.Layer):
    """Mean over real tokens (GlobalAveragePooling1D that ignores PAD)."""

    def call(self, inputs: list[Any]) -> Any:
        x, mask = inputs
        mask = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        return ops.sum(x * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


def ngram_features(ids: Any, vocab_size: int, buckets: int) -> Any:
    """Feature ids of the unigrams and hashed bigrams of ``ids`` (0 where PAD is involved).

    Unigram ``i`` -> ``i``; bigram ``(a, b)`` -> ``vocab_size + (a * BIGRAM_HASH + b) % buckets``.
    ``worker.model.ngrams.feature_ids`` is the NumPy twin used when fitting (a test keeps them
    equal).
    """
    ids64 = ops.cast(ids, "int64")
    left, right = ids64[:, :-1], ids64[:, 1:]
    bigrams = vocab_size + (left * BIGRAM_HASH + right) % buckets
    valid = ops.logical_and(ops.not_equal(left, 0), ops.not_equal(right, 0))
    bigrams = ops.where(valid, bigrams, ops.zeros_like(bigrams))
    return ops.concatenate([ids64, bigrams], axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NgramBag(keras.layers.Layer):
    """Linear score over the *set* of unigrams and hashed bigrams in a text (NBSVM-style).

    ``score = sum(weights[f] for f in unique(features))``.  The weights are fitted outside Keras
    (NB-scaled logistic regression, see ``worker.model.ngrams``) and loaded with
    ``set_weights``; feature 0 (PAD, and any bigram touching PAD) is never counted.
    """

    def __init__(self, vocab_size: int, buckets: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.buckets = buckets

    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(
            name="table",
            shape=(self.vocab_size + self.buckets,),
            initializer="zeros",
            trainable=False,
        )

    def call(self, ids: Any) -> Any:
        feats = ops.sort(ngram_features(ids, self.vocab_size, self.buckets), axis=1)
        first = ops.concatenate(
            [ops.ones_like(feats[:, :1], dtype="bool"), ops.not_equal(feats[:, 1:], feats[:, :-1])],
            axis=1,
        )
        counted = ops.logical_and(first, ops.not_equal(feats, 0))  # each feature once, never PAD
        weights = ops.take(self.table, feats)
        weights = ops.where(counted, weights, ops.zeros_like(weights))
        return ops.sum(weights, axis=1, keepdims=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size, "buckets": self.buckets}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogitBlend(keras.layers.Layer):
    """Two-class logits from ``a * cnn_log_odds + b * bag_score + c`` (fitted on validation)."""

    def build(self, input_shape: Any) -> None:
        self.coef = self.add_weight(
            name="coef",
            shape=(3,),
            initializer=keras.initializers.Constant([1.0, 0.0, 0.0]),
            trainable=False,
        )

    def call(self, inputs: list[Any]) -> Any:
        cnn_logits, bag = inputs
        log_odds = cnn_logits[:, 1:2] - cnn_logits[:, 0:1]
        z = self.coef[0] * log_odds + self.coef[1] * bag + self.coef[2]
        return ops.concatenate([-z / 2.0, z / 2.0], axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LengthBlend(keras.layers.Layer):
    """Two-class logits from a blend of the CNN and two n-gram bags, chosen by text length.

    ``z = coef[c] . [cnn_log_odds, review_bag, crop_bag, 1]`` where ``c`` is 0 for texts of at
    most ``short_tokens`` real tokens and 1 otherwise: a one-line chat message and a full review
    are weighed by coefficients fitted on validation texts of their own kind.
    """

    def __init__(self, short_tokens: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.short_tokens = short_tokens

    def build(self, input_shape: Any) -> None:
        self.coef = self.add_weight(
            name="coef",
            shape=(2, 4),
            initializer=keras.initializers.Constant([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
            trainable=False,
        )

    def call(self, inputs: list[Any]) -> Any:
        cnn_logits, review_bag, crop_bag, ids = inputs
        log_odds = cnn_logits[:, 1:2] - cnn_logits[:, 0:1]
        n = ops.sum(ops.cast(ops.not_equal(ids, 0), "int32"), axis=1, keepdims=True)
        coef = ops.where(n <= self.short_tokens, self.coef[0], self.coef[1])  # (B, 4)
        z = (
            coef[:, 0:1] * log_odds
            + coef[:, 1:2] * review_bag
            + coef[:, 2:3] * crop_bag
            + coef[:, 3:4]
        )
        return ops.concatenate([-z / 2.0, z / 2.0], axis=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "short_tokens": self.short_tokens}
