"""Load a published model version and predict in-process, in length-bucketed batches.

Usage::

    predictor = load_predictor(ModelStore(root, name).resolve("LATEST"))
    predictions = predictor.predict_texts(["A wonderful film.", "Dull."])

Loading checks that the files match the manifest's checksums, that the vocabulary is the one the
model was trained with (fingerprint and embedding size) and that the preprocessing version is this
code's, then runs a smoke prediction: a version that fails any check is never served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.progress import progress as bar
from shared.schema import LABELS
from shared.store import MODEL_FILE, VOCAB_FILE, Published, StoreError, verify_files
from shared.text import PREPROCESSING, tokenize
from shared.vocab import DEFAULT_HEAD_FRACTION, Encoded, Vocabulary, VocabularyError
from worker.model.batching import length_batches, pad_batch
from worker.model.cnn import EMBEDDING_LAYER

DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class Prediction:
    """One text's label and class scores, with its encoding's counts."""

    label: str
    scores: dict[str, float]
    n_tokens: int
    oov_count: int
    truncated: bool


def make_forward(model: Any) -> Callable[[np.ndarray], Any]:
    """A traced inference call (``model.predict`` re-traces and costs far more per batch)."""
    import tensorflow as tf

    return tf.function(  # type: ignore[no-any-return]
        lambda ids: model(ids, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )


def run_batched(
    forward: Callable[[np.ndarray], Any],
    rows: Sequence[Sequence[int]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: str = "",
) -> list[np.ndarray]:
    """Run ``forward`` (one output or a list of them) over id rows in length-sorted batches.

    Returns one array per output, rows in the input order.
    """
    outs: list[np.ndarray] = []
    batches = length_batches([len(r) for r in rows], batch_size)
    for idx in bar(batches, desc=progress, disable=not progress, unit="batch"):
        result = forward(pad_batch([rows[i] for i in idx]))
        parts = [np.asarray(p) for p in (result if isinstance(result, list | tuple) else [result])]
        if not outs:
            outs = [np.zeros((len(rows), *p.shape[1:]), dtype=p.dtype) for p in parts]
        for out, part in zip(outs, parts, strict=True):
            out[idx] = part
    return outs


def batched_probs(
    forward: Callable[[np.ndarray], Any],
    rows: Sequence[Sequence[int]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: str = "",
) -> np.ndarray:
    """Class probabilities of id rows (``forward`` returns them), in the rows' order."""
    if not rows:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    return run_batched(forward, rows, batch_size, progress)[0]


class Predictor:
    """A loaded, validated model version."""

    def __init__(
        self,
        model: Any,
        vocab: Vocabulary,
        max_len: int,
        head_fraction: float,
        published: Published | None = None,
    ) -> None:
        self.model = model
        self.vocab = vocab
        self.published = published
        self.max_len = max_len
        self.head_fraction = head_fraction
        self._forward = make_forward(model)

    @property
    def model_version(self) -> str:
        """``name/vNNNN`` of the published version, or ``unpublished`` (during training)."""
        return self.published.model_version if self.published else "unpublished"

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize and encode texts exactly as in training (truncation included)."""
        return [self.vocab.encode(tokenize(t), self.max_len, self.head_fraction) for t in texts]

    def probs(
        self,
        rows: Sequence[Sequence[int]],
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: str = "",
    ) -> np.ndarray:
        """Class probabilities for encoded rows, computed in length-sorted batches."""
        return batched_probs(self._forward, rows, batch_size, progress)

    def predict_texts(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[Prediction]:
        """Labels and scores for raw texts (tokenized exactly as in training)."""
        encoded = self.encode(texts)
        probs = self.probs([e.ids for e in encoded], batch_size)
        return [
            Prediction(
                label=LABELS[int(p.argmax())],
                scores={name: float(p[k]) for k, name in enumerate(LABELS)},
                n_tokens=e.n_tokens,
                oov_count=e.oov_count,
                truncated=e.truncated,
            )
            for e, p in zip(encoded, probs, strict=True)
        ]


SMOKE_TEXTS = ("A wonderful, moving film.", "Dull and badly acted.", "")


def configure_tensorflow(threads: int = 0) -> None:
    """Cap TensorFlow's thread pools (0 = its default): needed when several workers share cores."""
    import tensorflow as tf

    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def load_predictor(published: Published, verify: bool = True) -> Predictor:
    """Load a version and check it (see the module docstring); raise StoreError if unusable."""
    import keras

    import worker.model.layers  # noqa: F401  (registers the custom layers for deserialization)

    path, manifest = published.path, published.manifest
    if verify:
        verify_files(path, manifest)
    if manifest.get("preprocessing", {}).get("version") != PREPROCESSING["version"]:
        raise StoreError(f"{path}: trained with other preprocessing rules")
    try:
        vocab = Vocabulary.load(path / VOCAB_FILE)
    except VocabularyError as exc:
        raise StoreError(str(exc)) from exc
    if vocab.fingerprint != manifest.get("vocab", {}).get("fingerprint"):
        raise StoreError(f"{path}: vocabulary does not match the manifest")
    try:
        model = keras.models.load_model(path / MODEL_FILE, compile=False)
    except Exception as exc:  # Keras raises many types for a corrupt file
        raise StoreError(f"{path}: cannot load model: {exc}") from exc
    try:
        embedding_rows = model.get_layer(EMBEDDING_LAYER).input_dim
        max_len = int(manifest["sequence_length"])
        head_fraction = float(manifest.get("head_fraction", DEFAULT_HEAD_FRACTION))
    except (KeyError, ValueError, TypeError) as exc:  # an incomplete manifest or model
        raise StoreError(f"{path}: not a servable version: {exc!r}") from exc
    if embedding_rows != len(vocab):
        raise StoreError(f"{path}: model embeds {embedding_rows} ids, vocabulary has {len(vocab)}")
    predictor = Predictor(model, vocab, max_len, head_fraction, published=published)
    smoke = predictor.predict_texts(list(SMOKE_TEXTS))
    if any(not np.isfinite(list(p.scores.values())).all() for p in smoke):
        raise StoreError(f"{path}: smoke prediction is not finite")
    return predictor
