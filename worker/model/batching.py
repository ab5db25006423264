"""Encoding reviews into id arrays and batching them by length (training and serving)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from shared.vocab import PAD_ID, Encoded, Vocabulary


def encode_texts(
    tokenized: Sequence[Sequence[str]], vocab: Vocabulary, max_len: int, head_fraction: float
) -> list[Encoded]:
    """Encode tokenized texts with ``vocab`` (truncation included)."""
    return [vocab.encode(tokens, max_len, head_fraction) for tokens in tokenized]


def pad_batch(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-pad id rows with PAD to the longest row (at least one column)."""
    width = max(1, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length (sorted), so short texts don't pay for long ones.

    Padding does not change a row's answer: the model zeroes PAD embeddings and pools only
    windows that start on a real token, and the explainer breaks pooling ties the same way
    whatever the batch (``worker.model.explain``)."""
    values = np.asarray(lengths)
    order = np.argsort(values, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class BucketedBatches(keras.utils.PyDataset):
    """Training batches grouped by length, reshuffled every epoch with a seeded generator.

    Rows are shuffled, cut into chunks of ``pool`` batches, sorted by length inside a chunk, and
    the resulting batches are shuffled: most of the bucketing speed-up, little ordering bias.
    """

    def __init__(
        self,
        rows: Sequence[Sequence[int]],
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        pool: int = 50,
    ) -> None:
        super().__init__()
        self.rows, self.labels = rows, labels
        self.batch_size, self.shuffle, self.pool = batch_size, shuffle, pool
        self.rng = np.random.default_rng(seed)
        self.lengths = np.array([len(r) for r in rows])
        self._batches: list[np.ndarray] = []
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        n = len(self.rows)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        chunk = self.batch_size * self.pool
        batches: list[np.ndarray] = []
        for start in range(0, n, chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches.extend(
                part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)
            )
        if self.shuffle:
            self.rng.shuffle(batches)  # type: ignore[arg-type]
        self._batches = batches

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._batches[index]
        return pad_batch([self.rows[i] for i in idx]), self.labels[idx]
