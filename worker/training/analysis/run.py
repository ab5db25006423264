"""One model version's forward pass over labelled samples: what every section is computed from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EPS = 1e-7
#: Samples drawn for silhouettes and k selection (the full split would cost minutes).
SUBSAMPLE = 3000


def jsonable(value: Any) -> Any:
    """JSON-ready: NumPy scalars and arrays converted, non-finite floats as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Run:
    """One model version's pass over the labelled samples."""

    model_version: str
    probs: np.ndarray  # (N, 2)
    features: np.ndarray  # (N, D) the layer before the classifier
    lengths: np.ndarray  # tokens in the review (before truncation)
    oov: np.ndarray
    rows: list[list[int]]
    tokens: list[list[str]]

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def loss(self, labels: np.ndarray) -> np.ndarray:
        return -np.log(np.clip(self.probs[np.arange(len(labels)), labels], EPS, 1.0))


def forward(served: Any, texts: Sequence[str], desc: str = "") -> Run:
    """Probabilities and latent features for every text (the predictor's batched forward)."""
    import keras
    import tensorflow as tf

    from worker.model.cnn import FEATURES_LAYER
    from worker.model.predictor import run_batched

    predictor = served.predictor
    model = predictor.model
    both = keras.Model(model.inputs, [model.get_layer(FEATURES_LAYER).output, model.outputs[0]])
    run = tf.function(
        lambda ids: both(ids, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    encoded = predictor.encode(list(texts))
    rows = [e.ids for e in encoded]
    features, probs = run_batched(run, rows, progress=desc or "forward")
    return Run(
        model_version=served.model_version,
        probs=probs.astype(np.float64),
        features=features,
        lengths=np.array([e.n_tokens for e in encoded]),
        oov=np.array([e.oov_count for e in encoded]),
        rows=rows,
        tokens=[e.tokens for e in encoded],
    )


def subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``k`` of ``n`` samples, seeded."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, k), replace=False))
