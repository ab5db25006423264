"""The model card (Mitchell et al., 2019) of a published version, generated from its manifest.

Every figure on the card is read from the version's ``manifest.json`` (and ``metrics.json``), so
the card cannot drift from the model: ``sentiment-models card`` writes it, and a test regenerates
the served version's card and compares it with ``docs/model-card.md``.  What a manifest cannot
say (intended use, limitations) is written here once, next to the figures it qualifies.
"""

from __future__ import annotations

import json
from typing import Any

from shared.store import Published

#: Where the served version's card lives in the repository.
CARD_PATH = "docs/model-card.md"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.2f}%" if isinstance(value, int | float) else "not recorded"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not recorded"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _metrics_file(published: Published) -> dict[str, Any]:
    path = published.path / "metrics.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _one_in(metrics: Any) -> str:
    """'about 1 in 12' from a metrics dict's accuracy."""
    accuracy = _get(metrics, "accuracy")
    if not isinstance(accuracy, int | float) or accuracy >= 1:
        return "an unrecorded share of"
    return f"about 1 in {round(1 / (1 - accuracy))}"


def _data_rows(manifest: dict[str, Any]) -> list[str]:
    rows = []
    for split in ("train", "test"):
        d = _get(manifest, "data", split) or {}
        rows.append(
            f"| {split} | {d.get('path', '-')} ({d.get('split', '-')}) | {_num(d.get('n'))} "
            f"| {_num(d.get('positive'))} | `{d.get('fingerprint', '-')}` |"
        )
    extra = _get(manifest, "data", "extra")
    if isinstance(extra, dict):
        for name, d in sorted(extra.items()):
            d = d if isinstance(d, dict) else {}
            source = d.get("source") or d.get("path") or "-"
            licence = d.get("licence") or d.get("license") or "-"
            rows.append(
                f"| {name} | {source} (licence: {licence}) | {_num(d.get('n'))} "
                f"| {_num(d.get('positive'))} | `{d.get('fingerprint', '-')}` |"
            )
    return rows


def _training(manifest: dict[str, Any]) -> list[str]:
    t = manifest.get("training") or {}
    lines = [
        f"- Architecture: `{manifest.get('architecture', '-')}`; hyper-parameters: "
        + ", ".join(f"{k} {v}" for k, v in sorted((manifest.get("hparams") or {}).items())),
        f"- Sequence length {_num(manifest.get('sequence_length'))} tokens (longer reviews are "
        f"truncated); vocabulary {_num(_get(manifest, 'vocab', 'size'))} words "
        f"(fingerprint `{_get(manifest, 'vocab', 'fingerprint') or '-'}`).",
        f"- Trained on {_num(t.get('train_reviews'))} reviews, validated on "
        f"{_num(t.get('validation_reviews'))} ({t.get('val_split', '-')} split, "
        f"fraction {t.get('val_fraction', '-')}); seed {t.get('seed', '-')}; best epoch "
        f"{t.get('best_epoch', '-')} of {t.get('epochs_run', '-')} "
        f"(max {t.get('max_epochs', '-')}); {_num(t.get('seconds'), 1)} s of training.",
    ]
    embeddings = t.get("pretrained_embeddings")
    if isinstance(embeddings, dict):
        lines.append(
            f"- Pretrained embeddings: {embeddings.get('method', '-')} on "
            f"{_num(embeddings.get('texts'))} texts, of which {_num(embeddings.get('unlabelled'))}"
            f" unlabelled reviews{' (aclImdb `train/unsup`)' if _imdb(manifest, 'train') else ''};"
            " no test review is among them."
        )
    pseudo = _get(t, "ngram_branch", "pseudo_labelled")
    if isinstance(pseudo, dict):
        lines.append(
            f"- n-gram branch: also trained on {_num(pseudo.get('reviews'))} of "
            f"{_num(pseudo.get('of'))} unlabelled reviews, pseudo-labelled where the model's "
            f"log-odds exceeded {pseudo.get('min_log_odds', '-')}."
        )
    return lines


def _imdb(manifest: dict[str, Any], part: str) -> bool:
    """Whether the manifest's ``data.<part>`` is the aclImdb archive or folder."""
    return "aclimdb" in str(_get(manifest, "data", part, "path") or "").lower()


def _test_name(manifest: dict[str, Any]) -> str:
    if _imdb(manifest, "test"):
        return "IMDB test split (full reviews)"
    return f"test file `{_get(manifest, 'data', 'test', 'path') or '-'}`"


def _provenance(manifest: dict[str, Any]) -> str:
    """Where the training data came from, as the manifest records it."""
    if _imdb(manifest, "train"):
        return (
            "The IMDB Large Movie Review Dataset (Maas et al., 2011; "
            "<https://ai.stanford.edu/~amaas/data/sentiment/>): 50,000 labelled reviews split "
            "in halves by movie, plus 50,000 unlabelled ones. The test split is used for "
            "reporting only; every choice (recipe, threshold, temperature) is made on the "
            "validation split carved from train."
        )
    train = _get(manifest, "data", "train", "path") or "-"
    return (
        f"The labelled file `{train}` given to `sentiment-train --data`; its source and licence "
        "are not recorded in the manifest, so this card cannot state them. The test set is used "
        "for reporting only; every choice is made on the validation split carved from train."
    )


def _evaluation(manifest: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    test = _get(manifest, "metrics", "test") or {}
    lines = [
        "| set | n | accuracy | log loss | ECE |",
        "|---|---:|---:|---:|---:|",
        f"| {_test_name(manifest)} | {_num(test.get('n'))} | {_pct(test.get('accuracy'))} "
        f"| {_num(test.get('loss'))} | {_num(test.get('ece'))} |",
    ]
    validation = _get(manifest, "metrics", "validation") or {}
    lines.append(
        f"| validation (from train, full reviews) | {_num(validation.get('n'))} "
        f"| {_pct(validation.get('accuracy'))} | {_num(validation.get('loss'))} | - |"
    )
    for kind, label in (("full", "full reviews"), ("short", "one sentence of each review")):
        v = _get(manifest, "calibration", "validation", "after", kind) or {}
        if v:
            lines.append(
                f"| validation, calibrated: {label} | {_num(v.get('n'))} "
                f"| {_pct(v.get('accuracy'))} | {_num(v.get('log_loss'))} | {_num(v.get('ece'))} |"
            )
    per_class = _get(metrics, "test", "per_class") or {}
    if per_class:
        lines += ["", "Per class on the test split:", ""]
        lines += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for label in manifest.get("labels") or sorted(per_class):
            c = per_class.get(label) or {}
            lines.append(
                f"| {label} | {_pct(c.get('precision'))} | {_pct(c.get('recall'))} "
                f"| {_pct(c.get('f1'))} | {_num(c.get('support'))} |"
            )
    matrix = _get(metrics, "test", "confusion_matrix")
    if isinstance(matrix, list) and len(matrix) == 2:
        lines += [
            "",
            "Confusion matrix on the test split (rows: true class, columns: predicted):",
            "",
            "| | predicted negative | predicted positive |",
            "|---|---:|---:|",
            f"| negative | {_num(matrix[0][0])} | {_num(matrix[0][1])} |",
            f"| positive | {_num(matrix[1][0])} | {_num(matrix[1][1])} |",
        ]
    parts = _get(manifest, "metrics", "test_components") or {}
    if parts:
        lines += [
            "",
            "Test accuracy of each branch alone (the served model blends them): "
            + ", ".join(f"{k} {_pct(v)}" for k, v in sorted(parts.items()))
            + ".",
        ]
    return lines


def _verdicts(m: dict[str, Any]) -> list[str]:
    verdict, reasons = m.get("verdict") or {}, m.get("reasons") or {}
    if not verdict.get("linear"):
        return [
            "- No fitted verdict rule: `verdict` (positive, negative, mixed, neutral) follows the "
            "default thresholds of `worker.model.verdict.VerdictRule` (`sentiment-verdict` "
            "fits one)."
        ]
    val = verdict.get("validation") or {}
    f1 = val.get("f1") or {}
    return [
        "- `verdict` (positive, negative, mixed, neutral) comes from a four-class logistic "
        f"regression over {len(verdict['linear'].get('features', []))} features of the answer "
        "and of its sentences, fitted by `sentiment-verdict` on "
        f"{verdict.get('fitted_on', 'validation texts')}.",
        f"- Validation macro-F1 {_num(val.get('macro_f1'))} ("
        + ", ".join(f"{k} {_num(v, 3)}" for k, v in f1.items())
        + "); the evaluation set's figure is in docs/benchmarks.md (`bench/verdicts.py`).",
        "- Sentences: each sentence's answer is its share of the review's log-odds, calibrated "
        f"with temperature {_num(_get(verdict, 'sentences', 'temperature'), 3)} (fitted on "
        f"{_get(verdict, 'sentences', 'validation', 'n') or '-'} opinion sentences of the "
        "validation reviews, each read in its review).",
        f"- `reasons`: words that support the label with at least "
        f"{_num(reasons.get('min_share'), 2)} of the strongest one's weight, function words "
        "left out unless they are negations.",
    ]


def render(published: Published) -> str:
    """The card of ``published`` as Markdown."""
    m = published.manifest
    cal = m.get("calibration") or {}
    uncertain = cal.get("uncertain_below")
    short_uncertain = _get(cal, "validation", "after", "short", "uncertain_share")
    decision = m.get("decision")
    out = [
        f"# Model card: {published.model_version}",
        "",
        "<!-- Generated from the version's manifest by `sentiment-models card "
        f"{published.version} -o {CARD_PATH}`; tests/test_model_card.py fails when it is stale. "
        "Do not edit by hand. -->",
        "",
        f"Version `{published.version}` of `{published.name}`, created {m.get('created', '-')}; "
        "the version serving when this card was generated.",
        "",
        "## Intended use",
        "",
        "- Sentiment (negative / positive) of **English** reviews of movies, and, with lower "
        "accuracy, of products and services, for people reading the answers: each answer "
        "carries calibrated scores, an `uncertain` flag and the words that drove it.",
        "- Sorting and summarising many reviews (bulk files, batches), where a few percent of "
        "errors average out, and triage of single reviews by a person who sees the explanation.",
        "",
        "## Out of scope",
        "",
        "- Text in other languages: the model reads English only and will still answer.",
        "- Decisions about people (moderation, hiring, credit) or anything where one wrong "
        f"answer harms someone: the model is wrong on {_one_in(_get(m, 'metrics', 'test'))} "
        "full reviews and on "
        f"{_one_in(_get(cal, 'validation', 'after', 'short'))} single sentences (figures below).",
        "- Texts that are not opinions (news, instructions), sarcasm, and fine-grained ratings "
        "(it answers two classes, not stars).",
        "",
        "## Training data",
        "",
        "| data | source | reviews | positive | fingerprint |",
        "|---|---|---:|---:|---|",
        *_data_rows(m),
        "",
        _provenance(m),
        "",
        "## Model and training",
        "",
        *_training(m),
        "",
        "## Evaluation",
        "",
        *_evaluation(m, _metrics_file(published)),
        "",
        "## Calibration and confidence",
        "",
        f"- Temperature {_num(cal.get('temperature'))}, bias {_num(cal.get('bias'))} for full "
        f"reviews; for texts of at most {_get(cal, 'short', 'max_tokens') or '-'} tokens "
        f"temperature {_num(_get(cal, 'short', 'temperature'))}, bias "
        f"{_num(_get(cal, 'short', 'bias'))}; fitted on {cal.get('fitted_on', 'not recorded')}.",
        f"- An answer whose larger score is under {_num(uncertain, 2)} is marked `uncertain` "
        f'(the bot and the CLI say "not sure"): {_pct(short_uncertain)} of single sentences '
        "on validation.",
        "",
        "## Verdicts and reasons",
        "",
        *_verdicts(m),
        "",
        "## Limitations and known failure modes",
        "",
        "- **Short texts**: one sentence carries much less evidence than a review; accuracy on "
        "single sentences is far below that on full reviews (table above).",
        "- **Negation, contrast and ratings** in short texts (48 tokens or fewer) are composed "
        "from the model's own token weights by rules on closed-class words (docs: model, "
        'behaviour): a negator reverses the next opinion word, the clause after "but" wins, '
        '"8/10" is a score. Idioms the rules do not list and negations of words the reviews '
        'use weakly ("I did not like the X": uncertain) still fail; longer reviews are read by '
        'the network alone. Short opinions built on such words ("I admired this laptop") '
        "are often uncertain.",
        '- **Domain**: trained on movie reviews; product and restaurant vocabulary ("stopped '
        'working", "cold food") is weakly covered.',
        "- **Mixed and neutral texts** get one of the two labels (`label`, binary by design); "
        "the four-valued `verdict` above tells them apart, not perfectly.",
        f"- **Long reviews** are truncated to {_num(m.get('sequence_length'))} tokens.",
        "- **Explanations** are faithful to the model (gradient x input, exact n-gram shares), "
        "not to human reasoning: a function word can carry weight (readers are shown only "
        "`reasons`, see above; the data keeps every weight).",
        "",
        "## How to retrain",
        "",
        "```sh",
        "sentiment-train                 # a new version from ../shared/data (see --help)",
        "sentiment-models list           # versions, their test accuracy, LATEST",
        f"sentiment-models card -o {CARD_PATH}   # this card for the new LATEST",
        "```",
        "",
        "The gated trainer (`sentiment-trainer`) retrains on user feedback and publishes only "
        "a challenger that passes the gate (docs: feedback).",
    ]
    if isinstance(decision, dict) and decision.get("summary"):
        out += ["", "## Publishing decision", "", str(decision["summary"])]
    return "\n".join(out) + "\n"
