"""The architectures, behind one builder: ``build_model(arch, vocab_size, hp)``.

* ``dense``   — the seeds' baseline: Embedding -> Dense -> GlobalAveragePooling1D -> softmax.
* ``cnn3``    — the seeds' three conv blocks (Conv1D + MaxPooling1D) and a global max pool.
* ``kim``     — multi-channel CNN after Kim (2014): parallel Conv1D with kernel sizes 1/2/3/5,
  global max pooling, dropout, softmax over negative/positive.
* ``kim_ngram`` — ``kim`` plus an NBSVM-style bag of unigrams and hashed bigrams next to the
  convolutions (after Johnson & Zhang 2015), blended on the log-odds scale.
* ``kim_ngram_crops`` (served) — ``kim_ngram`` plus a second bag fitted on sentence crops of the
  training reviews, and a length-gated blend: texts of at most ``SHORT_TOKENS`` tokens (chat
  messages) and longer ones (reviews) get coefficients fitted on validation texts of their kind.

Every model takes int token ids of any length (``shape=(None,)``, 0 = PAD) and is exact under
padding (PAD embeddings are zeroed, pooling ignores PAD), so bucketing by length is safe; ``cnn3``
is the seeds' model as published and is only approximately so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
from keras import layers

from worker.model import CROPS_ARCHITECTURE, SHORT_TOKENS
from worker.model.layers import (
    ApplyMask,
    LengthBlend,
    LogitBlend,
    MaskedGlobalMaxPool,
    MaskedMean,
    NgramBag,
    PadMask,
    RightPad,
)

ARCHITECTURES = ("dense", "cnn3", "kim", "kim_ngram", CROPS_ARCHITECTURE)
#: The architectures with n-gram bags fitted outside gradient descent.
NGRAM_ARCHITECTURES = ("kim_ngram", CROPS_ARCHITECTURE)
# Layer names other modules look up (the explainer, the trainer, the analysis report).
EMBEDDING_LAYER = "embedding"
ZERO_PAD_LAYER = "zero_pad"  # the embeddings with PAD positions zeroed
CONV_PREFIX = "conv"  # the Kim convolutions: conv1, conv2, conv3, conv5
FEATURES_LAYER = "features"  # the latent representation before the classifier
LOGITS_LAYER = "logits"
NGRAM_BAG_LAYER = "ngram_bag"
BLEND_LAYER = "blend"
CROP_BAG_LAYER = "ngram_bag_crops"
LENGTH_BLEND_LAYER = "length_blend"


@dataclass(frozen=True)
class HParams:
    """Architecture hyper-parameters (recorded in the manifest)."""

    # Small on purpose: the convolutions bound serving throughput on 2 cores (see the README).
    embed_dim: int = 48
    filters: int = 64
    kernel_sizes: tuple[int, ...] = (1, 2, 3, 5)
    dense_units: int = 64
    dropout: float = 0.5
    embed_dropout: float = 0.2
    buckets: int = 1 << 20
    l2: float = 0.0
    short_tokens: int = SHORT_TOKENS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HParams:
        """From a manifest's ``hparams`` (unknown keys ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "kernel_sizes" in known:
            known["kernel_sizes"] = tuple(known["kernel_sizes"])
        return cls(**known)


@dataclass
class Built:
    """The model to serve, and the part to train by gradient descent (same layers)."""

    model: keras.Model
    trainable: keras.Model


def _embed(ids: Any, vocab_size: int, hp: HParams, pad: int) -> tuple[Any, Any]:
    padded = RightPad(pad, name="right_pad")(ids)
    mask = PadMask(name="pad_mask")(padded)
    emb = layers.Embedding(vocab_size, hp.embed_dim, name=EMBEDDING_LAYER)(padded)
    emb = ApplyMask(name=ZERO_PAD_LAYER)([emb, mask])
    return emb, mask


def _kim_features(emb: Any, mask: Any, hp: HParams) -> Any:
    # Word dropout: drop whole tokens, not single embedding dimensions.
    x = layers.Dropout(hp.embed_dropout, noise_shape=(None, None, 1), name="word_drop")(emb)
    pooled = []
    for k in hp.kernel_sizes:
        conv = layers.Conv1D(hp.filters, k, activation="relu", name=f"{CONV_PREFIX}{k}")(x)
        pooled.append(MaskedGlobalMaxPool(name=f"pool{k}")([conv, mask]))
    if len(pooled) == 1:
        return layers.Identity(name=FEATURES_LAYER)(pooled[0])
    return layers.Concatenate(name=FEATURES_LAYER)(pooled)


def build_model(arch: str, vocab_size: int, hp: HParams | None = None) -> Built:
    """Build ``arch`` for a vocabulary of ``vocab_size`` ids; see the module docstring."""
    hp = hp or HParams()
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (choose from {', '.join(ARCHITECTURES)})")
    reg = keras.regularizers.L2(hp.l2) if hp.l2 else None
    ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    pad = max(hp.kernel_sizes) - 1 if arch.startswith("kim") else 0
    emb, mask = _embed(ids, vocab_size, hp, pad)
    if arch == "dense":
        x = layers.Dense(hp.dense_units, activation="relu", name="dense")(emb)
        features = MaskedMean(name=FEATURES_LAYER)([x, mask])
    elif arch == "cnn3":
        x = emb
        for block in range(3):
            x = layers.Conv1D(
                hp.filters, 3, padding="same", activation="relu", name=f"block{block + 1}_conv"
            )(x)
            if block < 2:
                x = layers.MaxPooling1D(2, padding="same", name=f"block{block + 1}_pool")(x)
        features = layers.GlobalMaxPooling1D(name=FEATURES_LAYER)(x)
    else:
        features = _kim_features(emb, mask, hp)
    x = layers.Dropout(hp.dropout, name="dropout")(features)
    logits = layers.Dense(2, kernel_regularizer=reg, name=LOGITS_LAYER)(x)
    probs = layers.Softmax(name="scores")(logits)
    trainable = keras.Model(ids, probs, name=f"{arch}_core")
    if arch not in NGRAM_ARCHITECTURES:
        return Built(trainable, trainable)
    bag_ids = RightPad(0, name="bag_ids")(ids)
    bag = NgramBag(vocab_size, hp.buckets, name=NGRAM_BAG_LAYER)(bag_ids)
    if arch == "kim_ngram":
        blended = LogitBlend(name=BLEND_LAYER)([logits, bag])
    else:
        crops = NgramBag(vocab_size, hp.buckets, name=CROP_BAG_LAYER)(bag_ids)
        blended = LengthBlend(hp.short_tokens, name=LENGTH_BLEND_LAYER)(
            [logits, bag, crops, bag_ids]
        )
    served = keras.Model(ids, layers.Softmax(name="scores_blended")(blended), name=arch)
    return Built(served, trainable)


def compile_for_training(model: keras.Model, learning_rate: float = 1e-3) -> None:
    """Adam and sparse cross-entropy, with accuracy reported."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
