"""``sentiment-verdict``: fit a version's four-valued verdict rule on validation texts.

    sentiment-verdict                            # LATEST; publishes a new version
    sentiment-verdict --model v0005 --per-class 400 --no-publish

Builds positive / negative / mixed / neutral texts (``worker.training.verdicts``) from the
version's own validation reviews and the unlabelled reviews (never the test split), scores them
as served, chooses the rule's thresholds with the best macro-F1, prints the per-verdict F1 and
the confusion table, and publishes a new version (the same model files) with the rule in its
manifest (``verdict``, ``reasons``); the source version stays in the store.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.aclimdb import ensure_aclimdb
from shared.cli import command_parser
from shared.config import settings_or_exit
from shared.datasets import DataError, read_reviews
from shared.log import configure_logging
from shared.schema import VERDICTS
from shared.store import ModelStore, StoreError

UNLABELLED = 6000


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = settings_or_exit("sentiment-verdict")
    p = command_parser("sentiment-verdict", __doc__, epilog=True)
    p.add_argument("--model", default="LATEST", help="version to fit (default LATEST)")
    p.add_argument("--data", type=Path, help="the training data it was trained on (default IMDB)")
    p.add_argument("--per-class", type=int, default=400, help="validation texts per verdict")
    p.add_argument("--seed", type=int, default=7, help="seed of the validation texts")
    p.add_argument("--no-publish", action="store_true", help="report only")
    args = p.parse_args(argv)
    if args.per_class < 10:
        p.error("--per-class must be at least 10")
    configure_logging(settings.log_level, settings.log_format)
    from worker.model.served import load_served
    from worker.training.calibrate import validation_reviews
    from worker.training.verdicts import build, fit_rule, observe, sentence_calibration

    store = ModelStore(settings.model_dir, settings.model_name)
    try:
        source = store.resolve(args.model, verify=True)
        data = ensure_aclimdb(args.data, settings.data_dir, False)
        texts, labels = validation_reviews(source, data)
        plain = [
            r.text
            for r in itertools.islice(read_reviews(data, split="unsup", errors="keep"), UNLABELLED)
            if r.error is None
        ] or texts
        items = build(
            list(zip(texts, labels.tolist(), strict=True)), plain, args.per_class, args.seed
        )
        served = load_served(store, source.version)
        pairs, sentence_fit = sentence_calibration(
            served, list(zip(texts, labels.tolist(), strict=True))
        )
        served = replace(served, rule=replace(served.rule, sentence_calibration=pairs))
        seen = observe(served, [i["text"] for i in items])
        gold = [i["verdict"] for i in items]
        rule, f1, details = fit_rule(seen, gold, served.rule)
    except (DataError, StoreError, KeyError, ValueError) as exc:
        print(f"sentiment-verdict: {exc}", file=sys.stderr)
        return 2
    assert rule.linear is not None
    print(
        f"sentences: temperature {pairs[0]:.3f}, bias {pairs[1]:+.3f} "
        f"(Platt fit on {sentence_fit.get('n', 0)} opinion sentences of validation reviews)"
    )
    print(
        f"{source.version}: logistic regression over {len(rule.linear['features'])} features "
        f"(C {rule.linear['C']:g}); validation macro-F1 {f1:.4f}, 5-fold cross-validated "
        f"{rule.linear['cross_validated_macro_f1']:.4f} ({len(items)} texts)"
    )
    print(f"{'gold / predicted':<18}" + "".join(f"{v:>10}" for v in VERDICTS) + f"{'F1':>8}")
    for v, row in zip(VERDICTS, details["confusion"], strict=True):
        print(f"{v:<18}" + "".join(f"{n:>10}" for n in row) + f"{details['f1'][v]:>8.3f}")
    if args.no_publish:
        return 0
    fitted = {
        "fitted_on": (
            f"validation split of the training data and {len(plain)} unlabelled reviews: "
            f"{args.per_class} texts per verdict (worker.training.verdicts), seed {args.seed}"
        ),
        "from_version": source.version,
        "validation": {"macro_f1": round(f1, 4), "n": len(items), **details},
    }

    def write(folder: Path) -> dict[str, Any]:
        for file in source.path.iterdir():
            if file.is_file() and file.name != "manifest.json":
                shutil.copy(file, folder / file.name)
                (folder / file.name).chmod(0o644)
        skip = ("files", "version", "created", "format", "name")
        manifest = {k: v for k, v in source.manifest.items() if k not in skip}
        rules = rule.as_manifest()
        manifest["verdict"] = {**rules["verdict"], **fitted}
        manifest["verdict"]["sentences"] = {
            "temperature": pairs[0],
            "bias": pairs[1],
            "fitted_on": "opinion sentences (VADER agreeing with the review's label) of the "
            "validation reviews, each read in its review",
            "validation": sentence_fit,
        }
        manifest["reasons"] = rules["reasons"]
        return manifest

    published = store.publish(write)
    print(f"published {published.model_version} (verdict rule fitted from {source.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
