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

Weights are reported oriented to the predicted label: positive supports it, negative opposes it.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.schema import LABELS
from worker.cnn import EMBEDDING_LAYER
from worker.data import length_batches, pad_batch
from worker.layers import BIGRAM_HASH

DEFAULT_BATCH_SIZE = 128
MAX_PHRASES = 5
PHRASE_CANDIDATES = 12  # best spans kept per window width before removing overlaps


@dataclass(frozen=True)
class Explained:
    """One text's prediction and explanation (weights oriented to ``label``)."""

    label: str
    scores: dict[str, float]
    log_odds: float
    token_weights: list[float]  # aligned with the encoded (kept) tokens
    phrases: list[tuple[int, int, float]]  # (start, end) token spans with weights, best first


class Explainer:
    """Wraps a loaded model; works for every architecture (phrases need the Kim convolutions)."""

    def __init__(self, model: Any) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        names = {layer.name for layer in model.layers}
        head = "blend" if "blend" in names else "logits"
        self._logit_model = keras.Model(model.inputs, model.get_layer(head).output)
        self._embedding = model.get_layer(EMBEDDING_LAYER)
        self._convs = sorted(
            (layer for layer in model.layers if layer.name.startswith("conv")),
            key=lambda layer: layer.kernel_size[0],
        )
        kernel, _ = model.get_layer("logits").get_weights()
        blend = (
            model.get_layer("blend").get_weights()[0] if "blend" in names else np.array([1.0, 0.0])
        )
        self._feature_weights = (float(blend[0]) * (kernel[:, 1] - kernel[:, 0])).astype(np.float32)
        self._offsets: dict[int, int] = {}
        offset = 0
        for layer in self._convs:
            self._offsets[layer.kernel_size[0]] = offset
            offset += layer.filters
        self._bag: tuple[np.ndarray, int, int, float] | None = None
        if "ngram_bag" in names:
            bag = model.get_layer("ngram_bag")
            self._bag = (bag.get_weights()[0], bag.vocab_size, bag.buckets, float(blend[1]))
        # Kim models: gradient x input in closed form from the forward pass (see _attribute_kim).
        self._kim = bool(self._convs) and "features" in names and "zero_pad" in names
        if self._kim:
            self._parts = keras.Model(
                model.inputs,
                [model.get_layer(head).output, model.get_layer("zero_pad").output]
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
            out.append((tf.argmax(masked, axis=1, output_type=tf.int32), pooled, weights))
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
        self, rows: Sequence[Sequence[int]], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Explained]:
        """Explain encoded rows (any lengths), in length-bucketed batches; output keeps order."""
        out: list[Explained | None] = [None] * len(rows)
        for idx in length_batches([len(r) for r in rows], batch_size):
            batch = pad_batch([rows[i] for i in idx])
            z, per_token, winners = self._run(batch)
            z, per_token = z.numpy(), per_token.numpy()
            winners = [(best.numpy(), contrib.numpy()) for best, contrib in winners]
            for j, i in enumerate(idx):
                mine = [(best[j], contrib[j]) for best, contrib in winners]
                out[i] = self._one(rows[i], float(z[j]), per_token[j], mine)
        return [e for e in out if e is not None]

    def _one(
        self,
        ids: Sequence[int],
        z: float,
        per_token: np.ndarray,
        winners: list[tuple[np.ndarray, np.ndarray]],
    ) -> Explained:
        n = len(ids)
        sign = 1.0 if z > 0 else -1.0
        weights = per_token[:n].astype(np.float64)
        # Span weights per window width: CNN winning windows, plus the n-gram branch's bigrams.
        spans: dict[int, np.ndarray] = {}
        if n:
            for layer, (best, contrib) in zip(self._convs, winners, strict=True):
                k = layer.kernel_size[0]
                # Per start position: summed contribution of the filters whose max is there.
                window = np.bincount(best, weights=contrib, minlength=n)[:n]
                spans[k] = spans.get(k, np.zeros(n)) + window
            if self._bag is not None:
                bigram_share = self._add_bag(np.asarray(ids, dtype=np.int64), weights)
                spans[2] = spans.get(2, np.zeros(n))
                spans[2][: n - 1] += bigram_share
        starts, ends, values = [], [], []
        for k, span_values in spans.items():
            oriented = sign * span_values
            m = min(PHRASE_CANDIDATES, n)
            top = np.argpartition(-oriented, m - 1)[:m] if n > m else np.arange(n)
            end = np.minimum(top + k, n)
            keep = (oriented[top] > 0) & (end - top > 1)
            starts.append(top[keep])
            ends.append(end[keep])
            values.append(oriented[top[keep]])
        candidates = _ranked(starts, ends, values) if starts else []
        p_pos = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
        return Explained(
            label=LABELS[int(z > 0)],
            scores={LABELS[0]: 1.0 - p_pos, LABELS[1]: p_pos},
            log_odds=z,
            token_weights=(sign * weights).tolist(),
            phrases=_non_overlapping(candidates),
        )

    def _add_bag(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Add the n-gram branch's exact shares to ``weights``; return per-bigram weights."""
        assert self._bag is not None
        table, vocab_size, buckets, coef = self._bag
        _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        weights += coef * table[ids] / counts[inverse]
        if len(ids) < 2:
            return np.zeros(0)
        bigrams = vocab_size + (ids[:-1] * BIGRAM_HASH + ids[1:]) % buckets
        _, inverse, counts = np.unique(bigrams, return_inverse=True, return_counts=True)
        share = coef * table[bigrams] / counts[inverse]
        weights[:-1] += share / 2
        weights[1:] += share / 2
        return share  # type: ignore[no-any-return]


def _ranked(
    starts: list[np.ndarray], ends: list[np.ndarray], values: list[np.ndarray]
) -> list[tuple[int, int, float]]:
    """Candidate spans as plain tuples, best first (NumPy scalars are slow in a Python loop)."""
    all_values = np.concatenate(values)
    order = np.argsort(-all_values, kind="stable")
    return list(
        zip(
            np.concatenate(starts)[order].tolist(),
            np.concatenate(ends)[order].tolist(),
            all_values[order].tolist(),
            strict=True,
        )
    )


def _non_overlapping(ranked: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Greedily keep the best phrases that share no token with a better one."""
    kept: list[tuple[int, int, float]] = []
    for start, end, weight in ranked:
        if all(end <= s or start >= e for s, e, _ in kept):
            kept.append((start, end, weight))
            if len(kept) == MAX_PHRASES:
                break
    return kept


def top_words(tokens: Sequence[str], weights: Sequence[float], k: int) -> list[list[Any]]:
    """Sum weights per token type; the ``k`` largest by absolute weight, as ``[token, weight]``."""
    totals: dict[str, float] = defaultdict(float)
    for token, weight in zip(tokens, weights, strict=True):
        totals[token] += weight
    ranked = heapq.nlargest(k, totals.items(), key=lambda item: abs(item[1]))
    return [[token, round(weight, 4)] for token, weight in ranked]


def phrase_texts(
    tokens: Sequence[str], phrases: Sequence[tuple[int, int, float]]
) -> list[list[Any]]:
    return [[" ".join(tokens[s:e]), round(w, 4)] for s, e, w in phrases]
