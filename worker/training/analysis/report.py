"""The analysis report of a model version: compute every section, draw, write HTML and JSON.

``analyze(store, version, reviews, out, compare=...)`` runs the version over labelled reviews and
writes ``report.html`` (images embedded, no network, no JavaScript), the PNGs and
``analysis.json`` with every number the report shows.  Sections: training, the population map
of the latent space (the layer before the classifier), unsupervised clusters, loss against
simple features of the text, heat maps of the highest-loss and of random samples, and the
comparison with another version.  A missing optional dependency (TextBlob) turns its part into
a note, never a failure.  The command line is ``sentiment-analyze``.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from shared.datasets import DataError, Review
from shared.schema import VERDICTS
from shared.store import ModelStore
from worker.training.analysis import plots
from worker.training.analysis.clusters import Clusters
from worker.training.analysis.run import Run, forward
from worker.training.analysis.sections import (
    Comparison,
    Exploration,
    Population,
    Samples,
    Training,
    by_length,
)

log = structlog.get_logger(__name__)

SECTIONS = (
    "training",
    "population",
    "clusters",
    "data_exploration",
    "samples",
    "comparison",
    "verdicts",
)


@dataclass
class Analysis:
    """Every section of one report, and what it was computed on."""

    model_version: str
    data: str
    n: int
    skipped: int
    generated: str
    training: Training
    population: Population
    clusters: Clusters
    exploration: Exploration
    samples: Samples
    comparison: Comparison | None
    verdicts: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_json(self, images: dict[str, Path]) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "data": self.data,
            "n": self.n,
            "skipped_unlabelled_or_unreadable": self.skipped,
            "generated": self.generated,
            "training": self.training.to_json(),
            "population": self.population.to_json(),
            "clusters": self.clusters.to_json(),
            "data_exploration": self.exploration.to_json(),
            "samples": self.samples.to_json(),
            "comparison": self.comparison.to_json() if self.comparison else None,
            "verdicts": self.verdicts,
            "seconds": self.seconds,
            "images": {name: path.name for name, path in images.items()},
        }


def draw(
    analysis: Analysis, out: Path, labels: np.ndarray, loss: np.ndarray, oov: np.ndarray
) -> dict[str, Path]:
    """Every figure of the report, as PNG files in ``out``."""
    from worker.model.evaluate import plot_confusion, plot_training_curves

    paths: dict[str, Path] = {}
    if analysis.training.history["epochs"]:
        paths["training_curves"] = out / "training_curves.png"
        plot_training_curves(analysis.training.history, paths["training_curves"])
    paths["confusion_matrix"] = out / "confusion_matrix.png"
    plot_confusion(analysis.training.evaluation, paths["confusion_matrix"], "analysed samples")
    paths["population_map"] = out / "population_map.png"
    plots.population_map(analysis.population, labels, loss, paths["population_map"])
    paths["cluster_map"] = out / "cluster_map.png"
    plots.cluster_map(analysis.population, analysis.clusters, oov, paths["cluster_map"])
    paths["loss_vs_features"] = out / "loss_vs_features.png"
    plots.loss_vs_features(analysis.exploration, paths["loss_vs_features"])
    if analysis.comparison is not None:
        paths["comparison"] = out / "comparison.png"
        plots.comparison(analysis.comparison, labels, paths["comparison"])
    return paths


def analyze(
    store: ModelStore,
    version: str,
    reviews: Sequence[Review],
    out: Path | None,
    compare: str | None = None,
    k: int = 10,
    data_name: str = "",
    verdict_items: Sequence[dict[str, Any]] = (),
) -> tuple[Path, dict[str, Any]]:
    """Write the report of ``version`` on the labelled ``reviews`` (and, given texts with a
    known ``verdict``, the four-valued verdict's accuracy); return (folder, JSON)."""
    from worker.model.served import load_served

    started = time.monotonic()
    labelled = [r for r in reviews if r.error is None and r.label is not None]
    if len(labelled) < 10:
        raise DataError(
            data_name or "data", f"need at least 10 labelled reviews, got {len(labelled)}"
        )
    if compare:
        store.resolve(compare)  # fail before the long work if it does not exist
    served = load_served(store, version)
    published = store.resolve(version)
    out = out or published.path / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    labels = np.array([r.label for r in labelled], dtype=np.int64)
    texts = [r.text for r in labelled]
    run = forward(served, texts, desc=f"forward {served.model_version}")
    loss = run.loss(labels)
    other, lengths_table = None, None
    if compare:
        compared = load_served(store, compare)
        other = forward(compared, texts, desc=f"forward {compare}")
        lengths_table = compare_by_length(
            [(served, run), (compared, other)], texts, labels, run.lengths
        )
    analysis = Analysis(
        model_version=served.model_version,
        data=data_name,
        n=len(labelled),
        skipped=len(reviews) - len(labelled),
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        training=Training.compute(published.path, labels, run),
        population=Population.compute(run, labels, loss),
        clusters=Clusters.compute(run, labels, loss, served.predictor.vocab.tokens),
        exploration=Exploration.compute(labelled, run, labels, loss),
        samples=Samples.compute(served, labelled, run, labels, loss, k),
        comparison=Comparison.compute(run, other, labels, lengths_table)
        if other is not None
        else None,
        verdicts=verdict_accuracy(served, verdict_items) if verdict_items else None,
    )
    images = draw(analysis, out, labels, loss, run.oov)
    analysis.seconds = time.monotonic() - started
    public = analysis.to_json(images)
    (out / "report.html").write_text(render_html(public, images), encoding="utf-8")
    (out / "analysis.json").write_text(
        json.dumps(public, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    log.info("analysis_written", out=str(out), seconds=round(analysis.seconds, 1), n=len(labelled))
    return out, public


def verdict_accuracy(served: Any, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (recall) and F1 per verdict, macro-F1 and the confusion table."""
    from worker.training.verdicts import macro_f1, observe

    seen = observe(served, [str(i["text"]) for i in items])
    gold = [str(i["verdict"]) for i in items]
    f1, details = macro_f1(gold, [served.rule.verdict(s) for s in seen])
    rows = []
    for name, counts in zip(VERDICTS, details["confusion"], strict=True):
        support = sum(counts)
        rows.append(
            {
                "verdict": name,
                "support": support,
                "accuracy": counts[VERDICTS.index(name)] / support if support else None,
                "f1": details["f1"][name],
                **{f"as {v}": n for v, n in zip(VERDICTS, counts, strict=True)},
            }
        )
    return {"n": len(items), "macro_f1": f1, "rows": rows, "fitted": served.rule.fitted}


#: Single sentences cut from the samples for the comparison's short-text row.
COMPARE_SENTENCES = 2000


def compare_by_length(
    versions: Sequence[tuple[Any, Run]], texts: list[str], labels: np.ndarray, lengths: np.ndarray
) -> list[dict[str, Any]]:
    """Both versions' answers (their own calibration applied, as the workers answer) per length
    bin of the samples, from the passes already made, and on single sentences cut from them
    (labelled like their review)."""
    from worker.training.calibrate import answer_probs, calibrated
    from worker.training.sentences import sentences_from

    sentences, y_sentences = sentences_from(
        texts, labels, min(COMPARE_SENTENCES, len(texts)), seed=0
    )
    answers = []
    for served, run in versions:
        p = np.clip(run.probs[:, 1].astype(np.float64), 1e-7, 1 - 1e-7)
        answers.append(calibrated(np.log(p / (1 - p)), run.lengths, served.calibration))
    short = [answer_probs(served, sentences) for served, _ in versions] if sentences else None
    return by_length(
        [served.model_version for served, _ in versions],
        answers,
        lengths,
        labels,
        (short, y_sentences) if short is not None else None,
    )


# -- HTML ------------------------------------------------------------------------------------


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _heat(tokens: Sequence[str], weights: Sequence[float]) -> str:
    scale = max((abs(w) for w in weights), default=1.0) or 1.0
    spans = []
    for token, w in zip(tokens, weights, strict=True):
        a = min(1.0, abs(w) / scale)
        color = f"rgba(44,160,44,{a:.2f})" if w > 0 else f"rgba(214,39,40,{a:.2f})"
        spans.append(
            f'<span style="background:{color}" title="{w:+.3f}">{html.escape(token)}</span>'
        )
    return " ".join(spans)


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return html.escape(", ".join(map(str, v)))
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(analysis: dict[str, Any], images: dict[str, Path]) -> str:
    """The self-contained report page from the analysis JSON and its images."""
    t = analysis["training"]
    ev = t["evaluation"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Analysis of {html.escape(analysis['model_version'])}</title>",
        "<style>body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}"
        ".sample{border:1px solid #ddd;padding:.6em;margin:.8em 0}.heat{line-height:1.9}"
        ".heat span{padding:1px 2px;border-radius:3px}h2{border-bottom:2px solid #eee}"
        "</style></head><body>",
        f"<h1>Model analysis: {html.escape(analysis['model_version'])}</h1>",
        f"<p>{analysis['n']:,} labelled samples from {html.escape(analysis['data'])}; "
        f"generated {html.escape(analysis['generated'])} in {analysis['seconds']:.0f} s.</p>",
        "<section id='training'><h2>1. Training</h2>",
    ]
    if "training_curves" in images:
        parts.append(_img(images["training_curves"], "training curves"))
    else:
        parts.append("<p>No training history was stored with this version.</p>")
    parts.append(
        f"<p>Accuracy on these samples <b>{ev['accuracy']:.2%}</b>, loss {ev['loss']:.4f}; "
        f"{t['errors']['total']:,} errors ({t['errors']['false_positive']:,} false positives, "
        f"{t['errors']['false_negative']:,} false negatives).</p>"
    )
    parts.append(_img(images["confusion_matrix"], "confusion matrix"))
    parts.append(
        _table(
            [{"class": c, **v} for c, v in ev["per_class"].items()],
            ["class", "precision", "recall", "f1", "support"],
        )
    )
    parts.append("</section><section id='population'><h2>2. Population exploration</h2>")
    parts.append(_img(images["population_map"], "population map"))
    parts.extend(f"<p>{html.escape(s)}</p>" for s in analysis["population"]["sentences"])
    parts.append("</section><section id='clusters'><h2>3. Unsupervised clustering</h2>")
    parts.append(_img(images["cluster_map"], "cluster map"))
    parts.extend(f"<p>{html.escape(s)}</p>" for s in analysis["clusters"]["sentences"])
    parts.append(
        _table(
            analysis["clusters"]["clusters"],
            [
                "cluster",
                "size",
                "accuracy",
                "mean_loss",
                "positive_share",
                "mean_oov",
                "mean_length",
                "hard",
                "words",
            ],
        )
    )
    parts.append("</section><section id='data_exploration'><h2>4. Data exploration</h2>")
    parts.append(_img(images["loss_vs_features"], "loss against features"))
    for feat in analysis["data_exploration"]["features"].values():
        parts.append(f"<p>{html.escape(feat['sentence'])}</p>")
    parts.extend(f"<p><i>{html.escape(n)}</i></p>" for n in analysis["data_exploration"]["notes"])
    parts.append("</section><section id='samples'><h2>5. Sample analysis</h2>")
    parts.append(
        "<p>Word heat maps from the workers' attribution (gradient × input on the log-odds plus "
        "the n-gram branch's exact shares): green pushes towards the output named, red against "
        "it; hover a word for its weight.</p>"
    )
    for item in analysis["samples"]["items"]:
        negative = [-w for w in item["weights_positive"]]
        phrases = ", ".join(f"“{p}”" for p, _ in item["top_phrases"]) or "none"
        parts.append(
            f"<div class='sample'><b>{html.escape(item['group'])}</b> · "
            f"id {html.escape(str(item['id']))} · "
            f"truth <b>{item['truth']}</b>, predicted <b>{item['predicted']}</b> "
            f"(P(positive) = {item['scores']['positive']:.3f}, loss {item['loss']:.3f})"
            f"{' · truncated' if item['truncated'] else ''}"
            "<p>Positive output:</p><div class='heat'>"
            f"{_heat(item['tokens'], item['weights_positive'])}</div>"
            f"<p>Negative output:</p><div class='heat'>{_heat(item['tokens'], negative)}</div>"
            f"<p>Top phrases: {html.escape(phrases)}</p></div>"
        )
    parts.append("</section><section id='comparison'><h2>6. Model comparison</h2>")
    comparison = analysis.get("comparison")
    if comparison:
        parts.append(_img(images["comparison"], "per-sample loss comparison"))
        parts.extend(f"<p>{html.escape(s)}</p>" for s in comparison["sentences"])
        parts.append(
            _table(
                [
                    {"": "both right", "samples": comparison["both_right"]},
                    {
                        "": f"only {comparison['versions'][0]} right",
                        "samples": comparison["only_first_right"],
                    },
                    {
                        "": f"only {comparison['versions'][1]} right",
                        "samples": comparison["only_second_right"],
                    },
                    {"": "both wrong", "samples": comparison["both_wrong"]},
                ],
                ["", "samples"],
            )
        )
        if comparison.get("by_length"):
            parts.append(
                "<h3>By length</h3><p>Each version's answers as the workers give them (its "
                "calibration applied), per token-count bin of the samples, and on single sentences "
                "cut from them (labelled like their review): what chat users send.</p>"
            )
            parts.append(_table(comparison["by_length"], list(comparison["by_length"][0])))
    else:
        parts.append(
            "<p>Run with <code>--compare VERSION</code> to compare two versions on these "
            "samples.</p>"
        )
    parts.append("</section><section id='verdicts'><h2>7. Verdicts</h2>")
    verdicts = analysis.get("verdicts")
    if verdicts:
        parts.append(
            f"<p>The four-valued verdict on {verdicts['n']:,} texts with a known verdict: "
            f"macro-F1 <b>{verdicts['macro_f1']:.4f}</b>; rows are the true verdicts, "
            "<i>as ...</i> columns what was answered (mixed and neutral among them).</p>"
        )
        parts.append(_table(verdicts["rows"], list(verdicts["rows"][0])))
    else:
        parts.append("<p>Run with <code>--verdicts FILE</code> (JSONL: text, verdict).</p>")
    parts.append("</section></body></html>")
    return "\n".join(parts)
