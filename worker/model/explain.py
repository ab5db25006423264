"""Predictions with explanations: per-token weights, top words and the CNN's winning phrases.

One pass per batch gives both the prediction and the explanation:

* **CNN branch** — gradient x input on the embedding layer's output with respect to the log-odds
  ``z = logit(positive) - logit(negative)``.  For a ReLU/max-pool network this is a local
  linear decomposition (with zero biases it is exact: the weights sum to ``z``); it explains the
  log-odds, not the softmax probability, which saturates.  For the Kim models it is computed in
  closed form from the forward pass (``_attribute_kim``); other architectures use autodiff.
* **n-gram branch** — linear, so exact: each unique unigram's weight goes to its occurrences,
  each hashed bigram's weight half to each of its two tokens.
* **Phrases** — for each convolution filter, the window that won its global max pool contributes
  ``pooled activation x its weight on z``; summed per window, the top windows are the n-grams the
  CNN based its decision on (e.g. "entertaining mildly"), joined by the n-gram branch's bigrams.

This module computes the attributions (TensorFlow); ``worker.model.phrases`` turns them into
the bags' shares, phrases and top words (NumPy).

Weights are reported oriented to the predicted label: positive supports it, negative opposes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.schema import LABELS
from worker.model.batching import length_batches, pad_batch
from worker.model.cnn import (
    BLEND_LAYER,
    CONV_PREFIX,
    CROP_BAG_LAYER,
    EMBEDDING_LAYER,
    FEATURES_LAYER,
    LENGTH_BLEND_LAYER,
    LOGITS_LAYER,
    NGRAM_BAG_LAYER,
    ZERO_PAD_LAYER,
)
from worker.model.phrases import add_bag, best_phrases, top_words

DEFAULT_BATCH_SIZE = 128
#: Pooled windows this close (relative) to a filter's max count as tied with it.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Explained:
    """One text's prediction and explanation (weights oriented to ``label``)."""

    label: str
    scores: dict[str, float]
    log_odds: float
    token_weights: list[float]  # aligned with the encoded (kept) tokens
    phrases: list[tuple[int, int, float]]  # (start, end) token spans with weights, best first
    top_words: list[list[Any]] = field(default_factory=list)  # [token, weight], by |weight|


class Explainer:
    """Wraps a loaded model; works for every architecture (phrases need the Kim convolutions)."""

    def __init__(self, model: Any) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        names = {layer.name for layer in model.layers}
        head = next(n for n in (LENGTH_BLEND_LAYER, BLEND_LAYER, LOGITS_LAYER) if n in names)
        self._logit_model = keras.Model(model.inputs, model.get_layer(head).output)
        self._embedding = model.get_layer(EMBEDDING_LAYER)
        self._convs = sorted(
            (layer for layer in model.layers if layer.name.startswith(CONV_PREFIX)),
            key=lambda layer: layer.kernel_size[0],
        )
        kernel, _ = model.get_layer(LOGITS_LAYER).get_weights()
        blend = (
            model.get_layer(BLEND_LAYER).get_weights()[0]
            if BLEND_LAYER in names
            else np.array([1.0, 0.0])
        )
        # Length-gated blend: the coefficients depend on each row's length, so the CNN part is
        # computed with weight 1 and scaled per row in ``_finish``; each bag has its own column.
        self._by_length: tuple[int, np.ndarray] | None = None
        bag_columns: dict[str, Any] = {NGRAM_BAG_LAYER: float(blend[1])}
        if head == LENGTH_BLEND_LAYER:
            layer = model.get_layer(LENGTH_BLEND_LAYER)
            coef = layer.get_weights()[0].astype(np.float64)  # (short/long, cnn/bag/crops/1)
            self._by_length = (int(layer.short_tokens), coef)
            blend = np.array([1.0, 0.0])
            bag_columns = {NGRAM_BAG_LAYER: coef[:, 1], CROP_BAG_LAYER: coef[:, 2]}
        self._feature_weights = (float(blend[0]) * (kernel[:, 1] - kernel[:, 0])).astype(np.float32)
        self._offsets: dict[int, int] = {}
        offset = 0
        for layer in self._convs:
            self._offsets[layer.kernel_size[0]] = offset
            offset += layer.filters
        # Each n-gram bag: its table, vocabulary size, buckets, and its blend weight (a scalar,
        # or one per length class).
        self._bags = []
        for name, column in bag_columns.items():
            if name in names:
                bag = model.get_layer(name)
                self._bags.append((bag.get_weights()[0], bag.vocab_size, bag.buckets, column))
        # Kim models: gradient x input in closed form from the forward pass (see _attribute_kim).
        self._kim = bool(self._convs) and FEATURES_LAYER in names and ZERO_PAD_LAYER in names
        if self._kim:
            self._parts = keras.Model(
                model.inputs,
                [model.get_layer(head).output, model.get_layer(ZERO_PAD_LAYER).output]
                + [c.output for c in self._convs],
            )
            # (k, E, F) -> (F, k, E), to multiply the gathered windows (B, F, k, E) directly.
            self._kernels = [
                np.ascontiguousarray(c.get_weights()[0].transpose(2, 0, 1)).astype(np.float32)
                for c in self._convs
            ]
        method = self._attribute_kim if self._kim else self._attribute
        self._run = tf.function(method, input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def _winners(self, ids: Any, convs: list[Any]) -> list[tuple[Any, Any, Any]]:
        """Per convolution: each filter's winning window start, pooled value and share of z."""
        import tensorflow as tf

        real = tf.cast(tf.not_equal(ids, 0), tf.float32)
        out = []
        for layer, conv in zip(self._convs, convs, strict=True):
            width = tf.shape(conv)[1]
            mask = tf.pad(real, [[0, 0], [0, tf.maximum(width - tf.shape(real)[1], 0)]])[:, :width]
            masked = conv * mask[:, :, None]  # only windows that start on a real token
            offset = self._offsets[layer.kernel_size[0]]
            weights = self._feature_weights[offset : offset + layer.filters]
            pooled = tf.reduce_max(masked, axis=1)
            # The first window within rounding of the max wins: windows equal in exact
            # arithmetic (the same words twice) differ in the last bits with the batch's shape,
            # and a plain argmax would credit the first in one batch and the second in another.
            near = masked >= (pooled - TIE_TOLERANCE * (tf.abs(pooled) + 1e-6))[:, None, :]
            best = tf.argmax(tf.cast(near, tf.int32), axis=1, output_type=tf.int32)
            out.append((best, pooled, weights))
        return out

    def _attribute_kim(self, ids: Any) -> tuple[Any, Any, list[Any]]:
        """Exact gradient x input for ReLU convolutions + global max pool + linear head.

        The log-odds are ``sum_f w_f * max_t relu(b_f + sum_j W_f[j] . e[t + j])`` (+ terms
        that do not depend on the embeddings), so d z / d e[p] is ``w_f * W_f[p - t_f]`` summed
        over the active filters whose winning window ``t_f`` covers ``p``: one gather and one
        einsum on the forward pass replace the backward pass.  Where a pool ties (the same
        token twice), the first window gets the credit; autodiff would split it; totals agree.
        """
        import tensorflow as tf

        logits, emb, *convs = self._parts(ids, training=False)
        z = logits[:, 1] - logits[:, 0]
        batch, length = tf.shape(emb)[0], tf.shape(emb)[1]
        per_token = tf.zeros([batch * length])
        winners = []
        for (best, pooled, weights), kernel in zip(
            self._winners(ids, convs), self._kernels, strict=True
        ):
            k = kernel.shape[1]
            positions = best[:, :, None] + tf.range(k, dtype=tf.int32)[None, None, :]  # (B, F, k)
            windows = tf.gather(emb, positions, batch_dims=1)  # (B, F, k, E)
            dots = tf.reduce_sum(windows * kernel[None], axis=-1)  # (B, F, k)
            active = tf.cast(pooled > 0, tf.float32)
            share = dots * (weights * active)[:, :, None]
            flat = positions + (tf.range(batch, dtype=tf.int32) * length)[:, None, None]
            per_token += tf.math.unsorted_segment_sum(
                tf.reshape(share, [-1]), tf.reshape(flat, [-1]), batch * length
            )
            winners.append((best, pooled * weights))
        return z, tf.reshape(per_token, [batch, length]), winners

    def _attribute(self, ids: Any) -> tuple[Any, Any, list[Any]]:
        """Generic path (any architecture): gradient x input by automatic differentiation."""
        import tensorflow as tf

        captured: dict[str, Any] = {}
        with tf.GradientTape() as tape:

            def hook(op: Any) -> Any:
                if op is not self._embedding and op not in self._convs:
                    return op

                def call(*args: Any, **kwargs: Any) -> Any:
                    out = op(*args, **kwargs)
                    if op is self._embedding:
                        tape.watch(out)
                    captured[op.name] = out
                    return out

                return call

            logits = self._logit_model._run_through_graph(ids, operation_fn=hook)
            z = logits[:, 1] - logits[:, 0]
        emb = captured[self._embedding.name]
        grads = tape.gradient(z, emb)
        per_token = tf.reduce_sum(grads * emb, axis=-1)
        convs = [captured[c.name] for c in self._convs]
        winners = [(best, pooled * w) for best, pooled, w in self._winners(ids, convs)]
        return z, per_token, winners

    def explain_ids(
        self,
        rows: Sequence[Sequence[int]],
        batch_size: int = DEFAULT_BATCH_SIZE,
        tokens: Sequence[Sequence[str]] | None = None,
        top_k: int = 0,
    ) -> list[Explained]:
        """Explain encoded rows (any lengths), in length-bucketed batches; output keeps order.

        With ``tokens`` (the rows' token strings), each result also carries its ``top_k`` words.
        A row's answer does not depend on the rows batched with it.
        """
        out: list[Explained | None] = [None] * len(rows)
        for idx in length_batches([len(r) for r in rows], batch_size):
            batch = pad_batch([rows[i] for i in idx])
            z, per_token, winners = self._run(batch)
            explained = self._finish(
                batch,
                np.array([len(rows[i]) for i in idx], dtype=np.int64),
                z.numpy().astype(np.float64),
                per_token.numpy(),
                [(best.numpy(), contrib.numpy()) for best, contrib in winners],
                [tokens[i] for i in idx] if tokens is not None else None,
                top_k,
            )
            for i, e in zip(idx, explained, strict=True):
                out[i] = e
        return [e for e in out if e is not None]

    def _finish(
        self,
        ids: np.ndarray,
        lengths: np.ndarray,
        z: np.ndarray,
        per_token: np.ndarray,
        winners: list[tuple[np.ndarray, np.ndarray]],
        tokens: Sequence[Sequence[str]] | None,
        top_k: int,
    ) -> list[Explained]:
        """Weights, phrases and top words for one padded batch, with array operations.

        Every step works on the whole (B, L) batch at once; only choosing each row's
        non-overlapping phrases and naming its top words is a (short) Python loop per row.
        """
        if per_token.shape[1] > ids.shape[1]:  # the model pads short inputs to its widest kernel
            ids = np.pad(ids, ((0, 0), (0, per_token.shape[1] - ids.shape[1])))
        size, width = ids.shape
        row = np.arange(size)[:, None]
        valid = np.arange(width)[None, :] < lengths[:, None]
        weights = np.where(valid, per_token.astype(np.float64), 0.0)
        scale = np.ones(size)
        long_rows = np.zeros(size, dtype=np.int64)
        if self._by_length is not None:
            short_tokens, coef = self._by_length
            long_rows = (lengths > short_tokens).astype(np.int64)
            scale = coef[long_rows, 0]
            weights *= scale[:, None]
        # Span weights per window width: CNN winning windows (per start position: the summed
        # contribution of the filters whose max is there), plus the n-gram branch's bigrams.
        spans: dict[int, np.ndarray] = {}
        for layer, (best, contrib) in zip(self._convs, winners, strict=True):
            k = layer.kernel_size[0]
            flat = (best.astype(np.int64) + row * width).ravel()
            contrib = contrib * scale[:, None]
            window = np.bincount(flat, weights=contrib.ravel(), minlength=size * width)
            spans[k] = spans.get(k, 0) + window.reshape(size, width)
        for table, vocab_size, buckets, column in self._bags:
            coef = np.broadcast_to(np.asarray(column, dtype=np.float64), (2,))[long_rows]
            bag = (table, vocab_size, buckets)
            bigram_share = add_bag(bag, coef, ids.astype(np.int64), valid, weights)
            spans[2] = spans.get(2, 0) + bigram_share
        sign = np.where(z > 0, 1.0, -1.0)
        oriented = weights * sign[:, None]
        phrases = best_phrases(spans, lengths, sign)
        words = (
            top_words(ids, valid, oriented, tokens, top_k)
            if tokens is not None and top_k > 0
            else [[] for _ in range(size)]
        )
        p_pos = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
        return [
            Explained(
                label=LABELS[int(z[b] > 0)],
                scores={LABELS[0]: float(1.0 - p_pos[b]), LABELS[1]: float(p_pos[b])},
                log_odds=float(z[b]),
                token_weights=oriented[b, : lengths[b]].tolist(),
                phrases=phrases[b],
                top_words=words[b],
            )
            for b in range(size)
        ]
