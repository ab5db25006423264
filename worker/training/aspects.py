"""Build the opinion-target lexicon (``worker/model/aspects.txt``) from unlabelled reviews.

    python -m worker.training.aspects [--data ../shared/data/aclImdb_v1.tar.gz] [--limit 50000]

What an opinion is *about* is usually a noun ("the acting", "the plot", "the battery").  No
part-of-speech tagger installs offline with its model inside a wheel (spaCy's English models
are GitHub downloads, NLTK's and TextBlob's taggers fetch their data at run time, stanza
downloads its models), so the nouns reviews talk about are learnt from the reviews themselves,
as frequent-noun aspect extraction does (Hu & Liu 2004): a word is a target when, among its
occurrences, it often follows a determiner ("the", "this", "its", "his", ...) and, after one,
usually ends the noun phrase (a noun, not an adjective: "the plot was" vs "the main
character").  Opinion words (VADER's lexicon), function words and words ending in "-ly" are
never targets.  At serving time a word right after a determiner also counts as a target, so
"the battery" and "the waiter" are found in products and restaurants the lexicon never saw.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from shared.progress import progress
from shared.text import tokenize
from worker.model.targets import DETERMINERS, GENERIC, LEXICON_FILE
from worker.model.verdict import FUNCTION_WORDS, NEGATIONS

MIN_COUNT = 40
MIN_AFTER_DETERMINER = 0.3
MIN_HEAD = 0.6


def opinion_words() -> frozenset[str]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return frozenset(SentimentIntensityAnalyzer().lexicon)


def build(texts: Iterable[str]) -> list[tuple[str, int, float, float]]:
    """(word, count, share after a determiner, share ending its noun phrase), by count."""
    total: Counter[str] = Counter()
    after: Counter[str] = Counter()
    head: Counter[str] = Counter()
    for text in texts:
        tokens = tokenize(text)
        total.update(tokens)
        for i in range(1, len(tokens)):
            if tokens[i - 1] in DETERMINERS:
                word = tokens[i]
                after[word] += 1
                following = tokens[i + 1] if i + 1 < len(tokens) else "."
                if following in FUNCTION_WORDS or not following.isalpha():
                    head[word] += 1
    excluded = opinion_words() | FUNCTION_WORDS | NEGATIONS | GENERIC
    rows = []
    for word, n in total.items():
        if n < MIN_COUNT or word in excluded or not word.isalpha() or len(word) < 3:
            continue
        if word.endswith("ly"):
            continue
        a = after[word] / n
        h = head[word] / max(1, after[word])
        if a >= MIN_AFTER_DETERMINER and h >= MIN_HEAD:
            rows.append((word, n, a, h))
    rows.sort(key=lambda r: (-r[1], r[0]))
    return rows


def main(argv: list[str] | None = None) -> int:
    from shared.datasets import read_reviews

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/aclImdb_v1.tar.gz"))
    p.add_argument("--limit", type=int, default=50_000)
    p.add_argument("--out", type=Path, default=LEXICON_FILE)
    args = p.parse_args(argv)
    reviews = itertools.islice(read_reviews(args.data, split="unsup", errors="keep"), args.limit)
    texts = [r.text for r in progress(reviews, desc="read unsup", unit=" reviews") if r.text]
    rows = build(progress(texts, desc="count", unit=" reviews"))
    header = [
        "# Opinion targets: nouns reviews talk about (worker.training.aspects; one a line:",
        "# word, occurrences, share after a determiner, share ending its noun phrase).",
        f"# Source: the Large Movie Review Dataset (Maas et al. 2011), train/unsup, the first "
        f"{len(texts):,} reviews",
        "# (unlabelled; never test text). Counts only: no review text is kept here.",
        f"# Rules: >= {MIN_COUNT} occurrences, >= {MIN_AFTER_DETERMINER} after a determiner, "
        f">= {MIN_HEAD} ending the noun phrase;",
        "# no VADER lexicon word, function word, negation, generic word or -ly word.",
    ]
    body = [f"{w}\t{n}\t{a:.3f}\t{h:.3f}" for w, n, a, h in rows]
    args.out.write_text("\n".join(header + body) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} targets to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
