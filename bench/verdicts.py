"""The four-valued verdict on our evaluation set: macro-F1, F1 per verdict, confusion table.

    python bench/verdicts.py                     # LATEST and v0002 side by side
    python bench/verdicts.py --build             # rebuild bench/data/verdicts.jsonl (test split)

The set (``bench/data/verdicts.jsonl``) holds 150 texts of each verdict built from the IMDB
*test* split by ``worker.training.verdicts.build`` (seed 1): positive and negative texts are
opinion sentences of one review (VADER agreeing with the review's label) or a whole review;
mixed texts join opinion sentences of a positive and of a negative review; neutral texts are
statements cut from reviews.  Nothing is fitted on it (``sentiment-verdict`` fits on the
version's validation reviews and unlabelled reviews).  Also printed: the binary label's
accuracy on the set's positive and negative texts, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.infra import model_arguments
from shared.config import Settings
from shared.schema import VERDICTS
from shared.store import ModelStore

EVAL_SET = Path(__file__).resolve().parent / "data" / "verdicts.jsonl"
PER_CLASS, SEED, READ = 150, 1, 2000


def build_set(data: Path, path: Path = EVAL_SET) -> int:
    """Write the evaluation set from the test split (see the module docstring)."""
    import numpy as np

    from shared.datasets import read_reviews
    from worker.training.verdicts import build

    reviews = [r for r in read_reviews(data, split="test", labelled=True) if r.text.strip()]
    rng = np.random.default_rng(0)
    picked = rng.choice(len(reviews), READ, replace=False)
    plain = rng.choice(len(reviews), 3 * READ, replace=False)
    items = build(
        [(reviews[i].text, int(reviews[i].label)) for i in picked],
        [reviews[i].text for i in plain],
        PER_CLASS,
        SEED,
    )
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            src = item["source"]
            ids = {
                k: reviews[picked[v] if k != "plain" else plain[v]].id
                for k, v in src.items()
                if k in ("review", "and_review", "plain")
            }
            row = {"text": item["text"], "verdict": item["verdict"], "test_ids": ids}
            if src.get("whole"):
                row["whole_review"] = True
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(items)


def load_set(path: Path = EVAL_SET) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def evaluate(served: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Macro-F1 of ``served``'s verdicts (its manifest's rule) and its binary accuracy."""
    from worker.training.verdicts import macro_f1, observe

    seen = observe(served, [i["text"] for i in items])
    gold = [i["verdict"] for i in items]
    f1, details = macro_f1(gold, [served.rule.verdict(s) for s in seen])
    polar = [
        (s.p_text, g) for s, g in zip(seen, gold, strict=True) if g in ("positive", "negative")
    ]
    accuracy = sum((p > 0.5) == (g == "positive") for p, g in polar) / max(1, len(polar))
    return {"macro_f1": f1, "binary_accuracy": accuracy, "fitted": served.rule.fitted, **details}


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = f"{'model':<40} {'macro-F1':>8} " + " ".join(f"{v[:8]:>8}" for v in VERDICTS)
    lines = [head + f" {'label acc':>9}"]
    for name, r in rows.items():
        lines.append(
            f"{name:<40} {r['macro_f1']:>8.4f} "
            + " ".join(f"{r['f1'][v]:>8.3f}" for v in VERDICTS)
            + f" {r['binary_accuracy']:>9.4f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_arguments(parser, Settings.from_env())
    parser.add_argument("--compare", default="v0002", help="another version side by side")
    parser.add_argument("--build", action="store_true", help="rebuild the set from --data")
    args = parser.parse_args()
    if args.build:
        print(f"wrote {build_set(args.data)} texts to {EVAL_SET}")
        return 0
    from worker.model.served import load_served

    store = ModelStore(args.model_dir, args.model_name)
    items = load_set()
    rows = {}
    for name in dict.fromkeys([store.resolve(args.version).version, args.compare]):
        if name in store.versions():
            served = load_served(store, name)
            result = evaluate(served, items)
            rule = "fitted rule" if result["fitted"] else "default rule"
            rows[f"{served.model_version} ({rule})"] = result
    print(f"verdict evaluation set: {len(items)} texts ({EVAL_SET.name}, from the test split)")
    print(table(rows))
    first = next(iter(rows.values()))
    print("confusion of the first (rows gold, columns predicted):", first["confusion"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
