"""A picture of a whole batch: what customers praise and what they complain about, as HTML.

``BatchReport`` reads a batch's output rows as they stream (memory stays bounded: counters and a
few examples per target) and ``html()`` renders one self-contained page, no script and no
outside resource: verdict shares with a bar chart (inline SVG), the most frequent opinion
targets with their positive and negative counts, the words that drove each side, and a few
example sentences per target.  Everything from the reviews is escaped.

Used by ``sentiment-enqueue --report``, ``sentiment-run --report`` and the HTTP API's
``GET /v1/batches/{id}/report`` (a link on the page).  Targets and examples need per-sentence
answers (the batch enqueued with sentences); without them the report has verdicts and words.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from shared.schema import VERDICTS

TOP_TARGETS = 15
TOP_WORDS = 15
EXAMPLES = 2
EXAMPLE_CHARS = 220
COLOURS = {"positive": "#2ea043", "negative": "#d33", "mixed": "#d29922", "neutral": "#8b949e"}


def texts_of_jobs(conn: Any, job_ids: Iterable[str]) -> dict[str, str]:
    """Review id -> text, read from the jobs' payloads (while the jobs are kept)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from shared.serializer import JSONSerializer

    texts: dict[str, str] = {}
    for job in Job.fetch_many(list(job_ids), connection=conn, serializer=JSONSerializer):
        if job is None:
            continue
        try:
            payload = job.args[0]
        except (NoSuchJobError, IndexError, TypeError, ValueError):
            continue
        for review in payload.get("reviews", []) if isinstance(payload, Mapping) else []:
            if isinstance(review, Mapping) and isinstance(review.get("text"), str):
                texts[str(review.get("id"))] = review["text"]
    return texts


class BatchReport:
    """Counts and examples of a batch's rows (see the module docstring)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows = 0
        self.errors = 0
        self.verdicts: Counter[str] = Counter()
        self.targets: dict[str, Counter[str]] = {}
        self.words: dict[str, Counter[str]] = {"positive": Counter(), "negative": Counter()}
        self.examples: dict[tuple[str, str], list[str]] = {}
        self.model_versions: Counter[str] = Counter()

    def add(self, row: Mapping[str, Any], text: str | None = None) -> None:
        """One output row (and, for examples, its review's text)."""
        self.rows += 1
        if row.get("error") or row.get("label") not in ("positive", "negative"):
            self.errors += 1
            return
        self.model_versions[str(row.get("model_version", ""))] += 1
        self.verdicts[str(row.get("verdict") or row["label"])] += 1
        if row.get("verdict") != "neutral":
            self.words[row["label"]].update(row.get("reasons") or [])
        seen: set[tuple[str, str]] = set()
        about = row.get("about") or {}
        for sentence in row.get("sentences") or []:
            side = sentence.get("label")
            if side not in about:
                continue
            for target in sentence.get("targets") or []:
                if target not in about[side] or (target, side) in seen:
                    continue
                seen.add((target, side))
                self.targets.setdefault(target, Counter())[side] += 1
                kept = self.examples.setdefault((target, side), [])
                if text is not None and len(kept) < EXAMPLES:
                    quote = " ".join(text[sentence["start"] : sentence["end"]].split())
                    if len(quote) > EXAMPLE_CHARS:
                        quote = quote[: EXAMPLE_CHARS - 1] + "…"
                    kept.append(quote)

    def summary(self) -> dict[str, Any]:
        """The report's figures as data (what ``html`` shows)."""
        answered = sum(self.verdicts.values())
        top = sorted(self.targets.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        return {
            "rows": self.rows,
            "errors": self.errors,
            "verdicts": {v: self.verdicts[v] for v in VERDICTS},
            "shares": {v: self.verdicts[v] / answered if answered else 0.0 for v in VERDICTS},
            "targets": [
                {"target": t, "positive": c["positive"], "negative": c["negative"]}
                for t, c in top[:TOP_TARGETS]
            ],
            "words": {side: self.words[side].most_common(TOP_WORDS) for side in self.words},
            "model_versions": dict(self.model_versions),
        }

    def html(self) -> str:
        s = self.summary()
        e = html.escape
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{e(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{e(self.title)}</h1>",
            f"<p class='muted'>{s['rows']:,} lines, {s['rows'] - s['errors']:,} answered, "
            f"{s['errors']:,} without an answer (errors) · model "
            f"{e(', '.join(v for v in s['model_versions'] if v) or '-')}</p>",
            "<h2>Verdicts</h2>",
            _chart(s["verdicts"], s["shares"]),
            "<h2>What people talk about</h2>",
        ]
        if s["targets"]:
            parts.append(
                "<table id='targets'><tr><th>about</th><th>positive</th>"
                "<th>negative</th><th>examples</th></tr>"
            )
            for t in s["targets"]:
                quotes = [
                    f"<li class='{side}'>{e(q)}</li>"
                    for side in ("positive", "negative")
                    for q in self.examples.get((t["target"], side), [])
                ]
                parts.append(
                    f"<tr><td class='target'>{e(t['target'])}</td><td>{t['positive']:,}</td>"
                    f"<td>{t['negative']:,}</td><td><ul>{''.join(quotes)}</ul></td></tr>"
                )
            parts.append("</table>")
        else:
            parts.append(
                "<p class='muted' id='no-targets'>No opinion targets: the batch was answered "
                "without sentences (enqueue it with sentences for targets and examples).</p>"
            )
        parts.append("<h2>The words that drove each side</h2><div class='sides'>")
        for side in ("positive", "negative"):
            items = "".join(f"<li>{e(w)} <span>{n:,}</span></li>" for w, n in s["words"][side])
            parts.append(f"<div><h3>{side}</h3><ol id='words-{side}'>{items}</ol></div>")
        parts.append("</div></body></html>")
        return "".join(parts)


def _chart(counts: Mapping[str, int], shares: Mapping[str, float]) -> str:
    """Horizontal bars, one per verdict, as inline SVG."""
    rows = []
    for i, v in enumerate(VERDICTS):
        y = 10 + i * 34
        width = round(360 * shares[v], 1)
        rows.append(
            f"<text x='0' y='{y + 17}'>{v}</text>"
            f"<rect id='bar-{v}' x='90' y='{y}' width='{width}' height='24' "
            f"fill='{COLOURS[v]}'></rect>"
            f"<text x='{96 + width}' y='{y + 17}'>{counts[v]:,} ({shares[v]:.0%})</text>"
        )
    return (
        "<svg id='verdict-chart' role='img' aria-label='verdict shares' width='560' "
        f"height='{20 + 34 * len(VERDICTS)}' font-size='14'>{''.join(rows)}</svg>"
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
.muted { color: #666; } table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; vertical-align: top; }
td.target { font-weight: bold; } ul { margin: 0; padding-left: 1.1rem; }
li.positive::marker { content: "+ "; color: #2ea043; font-weight: bold; }
li.negative::marker { content: "− "; color: #d33; font-weight: bold; }
.sides { display: flex; gap: 3rem; } .sides span { color: #666; }
"""


def check_writable(path: Any) -> None:
    """Fail now (``DataError``) if the report cannot be written at ``path``: before any work."""
    from pathlib import Path

    from shared.datasets import DataError

    part = Path(path).with_name(Path(path).name + ".part")
    try:
        part.open("w").close()
    except OSError as exc:
        raise DataError(Path(path), f"cannot write the report: {exc.strerror or exc}") from exc
    part.unlink(missing_ok=True)


def write_report(report: BatchReport, path: Any) -> None:
    """Write the report's HTML to ``path`` (beside, then renamed: never half a page)."""
    from pathlib import Path

    target = Path(path)
    part = target.with_name(target.name + ".part")
    part.write_text(report.html(), encoding="utf-8")
    part.replace(target)
