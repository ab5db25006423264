"""The behavioural suite (bench/behaviour.py, issue 24): its cases, its rules, and the shipped
version kept within the targets on the capabilities it already meets."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from bench import behaviour
from bench.behaviour import Case, failed


def test_the_suite_is_large_varied_and_the_same_every_time() -> None:
    suite = behaviour.cases()
    assert suite == behaviour.cases()
    assert len(suite) >= 1500
    kinds = Counter(c.kind for c in suite)
    assert set(kinds) == {"mft", "inv", "dir"}
    caps = {c.capability for c in suite}
    assert len(caps) >= 12
    assert all(c.texts[0] != c.texts[-1] for c in suite if c.kind != "mft")
    assert len({c.texts for c in suite}) == len(suite)  # no case twice
    lexicons, _ = behaviour.load()
    for case in suite:
        assert "{" not in "".join(case.texts), case  # every slot filled
        if case.capability == "invariance: typos":
            a, b = case.texts
            diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
            assert len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
        if case.capability == "invariance: names":
            assert sum(n in case.texts[0] for n in lexicons["name"]) == 1


def test_the_suite_is_the_same_in_every_process() -> None:
    """Whatever the string hashing seed (it changes set order, and once changed the fills)."""
    import hashlib
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import hashlib, sys; sys.path.insert(0, '.'); from bench import behaviour; "
        "print(hashlib.sha256(repr(behaviour.cases()).encode()).hexdigest())"
    )
    here = hashlib.sha256(repr(behaviour.cases()).encode()).hexdigest()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.stdout.strip() == here, out.stderr


def test_the_tuning_set_shares_no_template_and_no_filler_with_the_evaluation_set() -> None:
    def words(lexicons: dict) -> set[str]:
        return {str(v).lower() for k, vs in lexicons.items() if k != "_about" for v in vs}

    def templates(groups: dict) -> set[str]:
        return {
            (c[0] if isinstance(c, list) else c).lower()
            for kind in ("mft", "inv", "dir")
            for g in groups[kind]
            for c in g["cases"]
        }

    eval_lex, eval_templates = behaviour.load()
    tune_lex, tune_templates = behaviour.load(behaviour.TUNE)
    assert words(eval_lex) and words(tune_lex) and not words(eval_lex) & words(tune_lex)
    assert not templates(eval_templates) & templates(tune_templates)
    tuning = behaviour.cases(data=behaviour.TUNE)
    assert len(tuning) >= 1000 and not {c.texts for c in tuning} & {
        c.texts for c in behaviour.cases()
    }


def test_what_fails_a_case() -> None:
    p = np.array
    positive = Case("c", "mft", ("x",), "positive")
    assert not failed(positive, p([0.9]), p([False]))
    assert failed(positive, p([0.9]), p([True]))  # "no opinion" is not the answer asked for
    assert failed(positive, p([0.2]), p([False]))
    not_negative = Case("c", "mft", ("x",), "not_negative")
    assert not failed(not_negative, p([0.2]), p([True])) and failed(
        not_negative, p([0.2]), p([False])
    )
    neutral = Case("c", "mft", ("x",), "neutral")
    assert failed(neutral, p([0.9]), p([False])) and not failed(neutral, p([0.9]), p([True]))
    inv = Case("c", "inv", ("a", "b"), "")
    assert failed(inv, p([0.6, 0.4]), p([False, False])) and not failed(
        inv, p([0.9, 0.6]), p([False, False])
    )
    keep = Case("c", "dir", ("a", "b"), "keep")
    assert failed(keep, p([0.9, 0.7]), p([False, False]))
    assert not failed(keep, p([0.2, 0.1]), p([False, False]))  # more negative: fine
    assert failed(keep, p([0.2, 0.35]), p([False, False]))
    worse = Case("c", "dir", ("a", "b"), "not_more_positive")
    assert failed(worse, p([0.5, 0.7]), p([False, False]))
    assert not failed(worse, p([0.8, 0.3]), p([False, False]))


@pytest.fixture(scope="module")
def shipped_rates() -> dict[str, tuple[float, int]]:
    """The shipped version's failure rate per capability, as served (one pass for all)."""
    return behaviour.failure_rates(behaviour.cases(), behaviour.served_answerer("LATEST"))


@pytest.mark.parametrize(
    "capability",
    [
        "intensifiers",
        "negation: negated negative",
        "negation at the end",
        "negation: not ... at all",
        "contrast: but",
        "contrast: however, yet, although",
        "no opinion: statements and questions",
        "ratings written as numbers",
        "invariance: casing",
        "invariance: places",
        "invariance: emoji",
        "invariance: typos",
    ],
)
def test_the_shipped_version_stays_within_the_targets_it_meets(
    capability: str, shipped_rates: dict[str, tuple[float, int]]
) -> None:
    kind = next(c.kind for c in behaviour.cases() if c.capability == capability)
    rate, n = shipped_rates[capability]
    bar = 0.10 if kind == "mft" else 0.03
    assert n > 0 and rate <= bar, (capability, rate)
