"""Word2vec initialisation of the embedding layer from training + unlabelled reviews.

Initialising the CNN's embeddings with word2vec vectors trained on the training part and the 50k
unlabelled IMDB reviews helps the Kim CNN: the labelled 25k are too few to learn good vectors for
rare words.  Test reviews are never used.
gensim is the well-kept reference implementation (C-optimised, seeded, multi-threaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import structlog

from shared.progress import progress
from shared.vocab import PAD_ID, Vocabulary

log = structlog.get_logger(__name__)

W2V_EPOCHS = 5
#: One worker thread: with two, the vectors differ from run to run (thread scheduling decides
#: the order of updates; measured: max difference 0.74 between two runs on 8k reviews), and the
#: recipe must be reproducible with a seed. One thread costs ~20% more word2vec time.
W2V_WORKERS = 1
W2V_WINDOW = 5
W2V_MIN_COUNT = 2
#: word2vec vectors are an order of magnitude larger than Keras' default embedding initialiser,
#: which makes the first epoch unstable; rescaled to its std, they keep their geometry.
TARGET_STD = 0.05


def word2vec_matrix(
    tokenized: Sequence[Sequence[str]], vocab: Vocabulary, dim: int, seed: int
) -> tuple[np.ndarray, float]:
    """Embedding matrix for ``vocab`` (PAD row zero) and the share of vocabulary covered."""
    import logging

    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class Progress(CallbackAny2Vec):  # type: ignore[misc]
        """One progress-bar step per word2vec epoch (gensim's own INFO lines are silenced)."""

        def __init__(self, bar: Any) -> None:
            self.bar = bar

        def on_epoch_end(self, model: Any) -> None:
            self.bar.update(1)

    logging.getLogger("gensim").setLevel(logging.WARNING)
    with progress(total=W2V_EPOCHS, desc="word2vec", unit=" epochs") as bar:
        model = Word2Vec(
            sentences=[list(t) for t in tokenized],
            vector_size=dim,
            window=W2V_WINDOW,
            min_count=W2V_MIN_COUNT,
            workers=W2V_WORKERS,
            epochs=W2V_EPOCHS,
            seed=seed,
            callbacks=[Progress(bar)],
        )
    vectors = model.wv
    factor = TARGET_STD / max(float(np.std(vectors.vectors)), 1e-12)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, TARGET_STD, size=(len(vocab), dim)).astype(np.float32)
    covered = 0
    for i, token in enumerate(vocab.tokens):
        if token in vectors.key_to_index:
            matrix[i] = vectors[token] * factor
            covered += 1
    matrix[PAD_ID] = 0.0
    share = covered / max(1, len(vocab) - 2)
    log.info("word2vec_trained", texts=len(tokenized), vocabulary_covered=round(share, 4))
    return matrix, share
