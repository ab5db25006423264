"""What a training run depends on: :class:`TrainConfig` and the recipe's defaults.

Its own module, apart from the loop (``worker.training.train``), so that the data step, the
unlabelled reviews and the command-line options can name a run's settings without importing
the training code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.vocab import DEFAULT_HEAD_FRACTION
from worker.model import CROPS_ARCHITECTURE

DEFAULT_ARCH = CROPS_ARCHITECTURE
DEFAULT_VOCAB_SIZE = 30_000
DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 64
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_PATIENCE = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the published manifest)."""

    data: Path | None = None
    test_data: Path | None = None
    no_test: bool = False
    download: bool = False
    arch: str = DEFAULT_ARCH
    vocab_size: int = DEFAULT_VOCAB_SIZE
    seq_len: int | None = None
    head_fraction: float = DEFAULT_HEAD_FRACTION
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = 1e-3
    seed: int = 1
    val_fraction: float = DEFAULT_VAL_FRACTION
    patience: int = DEFAULT_PATIENCE
    #: At most this many reviews of each labelled split, and of the unlabelled reviews (word2vec
    #: and pseudo-labelling): seeded samples.  None: all of them.
    limit: int | None = None
    #: The defaults are the served recipe (the command line's too): word2vec on the fitting +
    #: unlabelled reviews, and (kim_ngram_crops) sentences of confidently pseudo-labelled
    #: unlabelled reviews in the crop bag (``worker.training.unlabelled``).
    pretrain: str = "word2vec"
    unsup_data: Path | None = None
    pseudo_label: bool = True
    #: kim_ngram_crops: sentence crops and the short-text blend's sentences labelled by what
    #: each sentence says (``worker.training.sentences.sentence_labels``), not by its review.
    sentence_labels: bool = True
    #: A GPU teacher's soft labels (``worker.training.teacher``): validation becomes the teacher's
    #: holdout, and unlabelled reviews it is confident about train the network and both bags.
    soft_labels: Path | None = None
    #: Training reviews (labelled or not) whose text is also a validation or test review are
    #: left out (IMDB repeats some; versions before this stop were trained with them).
    evaluation_texts_out: bool = True
    min_accuracy: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    publish: bool = True
    #: Labelled examples added to the fitting set only (user feedback), each ``extra_repeat``
    #: times; never to validation or test.
    extra: tuple[tuple[str, int], ...] = ()
    extra_repeat: int = 1
