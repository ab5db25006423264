"""The validation split: seeded, the requested share, and whole movies on one side."""

import numpy as np

from worker.training.data import validation_split


def test_grouped_split_keeps_every_movie_on_one_side() -> None:
    rng = np.random.default_rng(0)
    groups = [f"tt{g}" for g in rng.integers(0, 300, size=5_000)]
    val, fit = validation_split(len(groups), seed=3, fraction=0.1, groups=groups)
    assert sorted(np.concatenate([val, fit]).tolist()) == list(range(5_000))
    assert not {groups[i] for i in val} & {groups[i] for i in fit}
    biggest = max(np.unique(groups, return_counts=True)[1])
    assert 500 <= len(val) < 500 + biggest  # whole movies until the share is reached
    again, _ = validation_split(len(groups), seed=3, fraction=0.1, groups=groups)
    assert again.tolist() == val.tolist()
    other, _ = validation_split(len(groups), seed=4, fraction=0.1, groups=groups)
    assert set(other.tolist()) != set(val.tolist())


def test_random_split_is_the_seeded_permutation() -> None:
    # Versions trained before the movie split are rebuilt with this (calibration, gate).
    val, fit = validation_split(1_000, seed=1, fraction=0.25, groups=None)
    order = np.random.default_rng(1).permutation(1_000)
    assert val.tolist() == order[:250].tolist() and fit.tolist() == order[250:].tolist()


def test_feedback_examples_reach_both_bags_and_never_validation(corpus: dict) -> None:
    # Feedback corrections are chat messages: the crop bag (what short texts are weighed by)
    # learns them as sent, as often as the review bag does; validation never sees them.
    from shared.config import Settings
    from shared.text import tokenize
    from worker.training.config import TrainConfig
    from worker.training.data import prepare

    extra = (("utterly pointless, skip it", 0), ("a small gem", 1))
    config = TrainConfig(
        data=corpus["train"],
        no_test=True,
        arch="kim_ngram_crops",
        vocab_size=200,
        extra=extra,
        extra_repeat=3,
        seed=2,
    )
    prepared = prepare(config, Settings())
    encoded = [prepared.vocab.encode(tokenize(t)).ids for t, _ in extra] * 3
    assert prepared.fit_crops[-6:] == encoded and prepared.fit_rows[-6:] == encoded
    assert prepared.y_crops[-6:].tolist() == [0, 1] * 3 == prepared.y_fit[-6:].tolist()
    assert len(prepared.val_rows) == 60 and prepared.val_split == "random"  # a CSV: no movies
    assert len(prepared.val_short_rows) == len(prepared.y_val_short) > 0
