"""Is a review in another language said, and is English never flagged? (issue 24)

    python bench/languages.py [--sentences 5000] [--tune]

Side by side for the served version's rule (``worker.model.language``: the vocabulary gate,
then py3langid) and for py3langid alone: on ``bench/data/languages-eval.tsv`` (hand-written
reviews in 14 languages and short English ones, never used to choose the thresholds), the
share of non-English texts flagged with their language and of English texts flagged; on IMDB
test sentences and whole test reviews, the English flagged (false flags).  ``--tune`` prints
the grid the thresholds were chosen on instead: ``bench/data/languages-tune.tsv`` and IMDB
*train* sentences.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from shared.config import Settings
from shared.datasets import read_reviews
from shared.sentences import sentence_spans
from shared.store import ModelStore
from shared.text import tokenize
from worker.model import language

DATA = Path(__file__).resolve().parent / "data"


def labelled(path: Path) -> list[tuple[str, str]]:
    """(language, text) pairs of a tab-separated file."""
    rows = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(lang, text) for lang, text in rows]


def imdb(split: str, n_reviews: int, n_sentences: int, seed: int = 0) -> tuple[list, list]:
    """Whole reviews and one random sentence of each of ``n_sentences`` reviews."""
    data = Settings.from_env().data_dir / "aclImdb_v1.tar.gz"
    texts = [r.text for r in islice(read_reviews(data, split=split), max(n_reviews, n_sentences))]
    rng = random.Random(seed)
    rng.shuffle(texts)
    sentences = []
    for text in texts[:n_sentences]:
        start, end = rng.choice(sentence_spans(text))
        sentences.append(text[start:end])
    return texts[:n_reviews], sentences


def counts(vocab: object) -> Callable[[str], tuple[int, int]]:
    """A text's (kept tokens, unknown tokens) under the served vocabulary."""

    def of(text: str) -> tuple[int, int]:
        enc = vocab.encode(tokenize(text), 400, 0.5)  # type: ignore[attr-defined]
        return len(enc.ids), enc.oov_count

    return of


def served_rule(of: Callable[[str], tuple[int, int]]) -> Callable[[str], str]:
    return lambda text: language.language_of(text, *of(text))


def detector_alone(text: str) -> str:
    return str(language._identifier().classify(text[: language.READ_CHARS])[0])


def flagged(detect: Callable[[str], str], texts: Sequence[str]) -> float:
    return sum(detect(t) != language.ENGLISH for t in texts) / max(len(texts), 1)


def report(of: Callable[[str], tuple[int, int]], n_sentences: int) -> None:
    pairs = labelled(DATA / "languages-eval.tsv")
    foreign = [(lang, t) for lang, t in pairs if lang != language.ENGLISH]
    english = [t for lang, t in pairs if lang == language.ENGLISH]
    reviews, sentences = imdb("test", 2000, n_sentences)
    rules = {"served rule": served_rule(of), "py3langid alone": detector_alone}
    print(
        f"{len(foreign)} non-English texts in {len({lang for lang, _ in foreign})} languages, "
        f"{len(english)} short English texts (bench/data/languages-eval.tsv); "
        f"{len(sentences)} IMDB test sentences, {len(reviews)} test reviews"
    )
    print(
        f"{'':<18}{'foreign named':>14}{'foreign flagged':>16}{'hand English':>13}"
        f"{'IMDB sentences':>15}{'IMDB reviews':>13}{'us/review':>10}"
    )
    for name, detect in rules.items():
        said = [detect(t) for _, t in foreign]
        named = sum(s == lang for s, (lang, _) in zip(said, foreign, strict=True)) / len(foreign)
        any_flag = sum(s != language.ENGLISH for s in said) / len(foreign)
        start = time.perf_counter()
        on_reviews = flagged(detect, reviews)
        per_review = (time.perf_counter() - start) / len(reviews) * 1e6
        print(
            f"{name:<18}{named:>14.1%}{any_flag:>16.1%}{flagged(detect, english):>13.1%}"
            f"{flagged(detect, sentences):>15.2%}{on_reviews:>13.2%}{per_review:>10.0f}"
        )
    missed = [(lang, t) for lang, t in foreign if rules["served rule"](t) == language.ENGLISH]
    wrong = Counter(lang for lang, t in foreign if rules["served rule"](t) not in (lang, "en"))
    false = [t for t in english + sentences if rules["served rule"](t) != language.ENGLISH]
    print(
        f"served rule: missed {missed[:5]}, named wrongly {dict(wrong)}, English flagged "
        f"{false[:5]}"
    )
    print("aim: every non-English text named, no English flagged")


def tune(of: Callable[[str], tuple[int, int]], n_sentences: int) -> None:
    pairs = labelled(DATA / "languages-tune.tsv")
    _, sentences = imdb("train", 0, n_sentences)
    texts = [t for _, t in pairs] + sentences
    truth = [lang != language.ENGLISH for lang, _ in pairs] + [False] * len(sentences)
    seen = [(of(t), language._identifier().classify(t[: language.READ_CHARS])) for t in texts]
    print(
        "unknown share >=, probability >=: foreign missed / English flagged (of "
        f"{sum(truth)} / {len(truth) - sum(truth)}; tune file + IMDB train sentences)"
    )
    for gate in (0.2, 0.3, 0.4, 0.5):
        for floor in (0.3, 0.5, 0.7, 0.9):
            missed = flags = 0
            for text, ((kept, unknown), (lang, p)), foreign in zip(texts, seen, truth, strict=True):
                share = unknown / kept if kept else 0.0
                said = language.named(text, share, lang, p, gate, floor)
                missed += foreign and not said
                flags += said and not foreign
            print(f"  {gate:.1f}, {floor:.1f}: {missed} / {flags}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=5000, help="IMDB sentences to check")
    parser.add_argument("--tune", action="store_true", help="the grid on the tuning data")
    parser.add_argument("--version", default="LATEST")
    args = parser.parse_args()
    settings = Settings.from_env()
    store = ModelStore(settings.model_dir, settings.model_name)
    from shared.vocab import Vocabulary

    vocab = Vocabulary.load(store.resolve(args.version).path / "vocab.json")
    (tune if args.tune else report)(counts(vocab), args.sentences)
    return 0


if __name__ == "__main__":
    sys.exit(main())
