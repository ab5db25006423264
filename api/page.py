"""The page at ``/``: try a review, see why the model decided, run a file through the queue.

Plain HTML and a little JavaScript, no build step.  Everything the server returns is put in the
page as text nodes (never as HTML), so a review full of markup shows as the text it is.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>review-sentiment: try the classifier</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
         color: #1d1d1f; }
  h1 { font-size: 1.5rem; margin-bottom: .25rem; }
  .sub { color: #555; margin-top: 0; }
  section { border: 1px solid #ddd; border-radius: 8px; padding: 1rem 1.25rem; margin: 1.25rem 0; }
  textarea { width: 100%; min-height: 8rem; font: inherit; box-sizing: border-box; }
  input[type=password] { width: 22rem; max-width: 100%; font: inherit; }
  button { font: inherit; padding: .35rem 1rem; margin-top: .5rem; cursor: pointer; }
  .label { font-size: 1.3rem; font-weight: 600; }
  .positive { color: #1a7f37; } .negative { color: #c62828; }
  .mixed { color: #9a6700; } .neutral { color: #57606a; }
  .sentences { padding: .75rem; background: #fafafa; border-radius: 6px; white-space: pre-wrap; }
  .sentences span.s { border-radius: 3px; padding: 1px 2px; color: inherit; }
  span.s.positive { background: rgba(46, 160, 67, .22); }
  span.s.negative { background: rgba(214, 51, 51, .22); }
  span.s.unsure { background: rgba(140, 149, 159, .2); }
  .bar { height: .6rem; background: #f1c5c5; border-radius: 4px; overflow: hidden; width: 20rem;
         max-width: 100%; }
  .bar > div { height: 100%; background: #7bc47f; }
  .heat { padding: .75rem; background: #fafafa; border-radius: 6px; white-space: pre-wrap; }
  .heat span.w { border-radius: 3px; padding: 0 1px; }
  .legend span { padding: 0 .4rem; border-radius: 3px; margin-right: .5rem; }
  .error { color: #c62828; font-weight: 600; }
  .muted { color: #666; font-size: .9rem; }
  progress { width: 20rem; max-width: 100%; }
  ul { margin: .25rem 0; }
</style>
</head>
<body data-auth-required="__AUTH__">
<h1>Text classifier API tester</h1>
<p class="sub">Movie-review sentiment with the words that decided it &mdash; the same model and
queue as the Telegram bot and the bulk producer.</p>

<section id="auth" hidden>
  <label for="token">API token</label><br>
  <input type="password" id="token" autocomplete="off" placeholder="paste your token">
  <button type="button" id="save-token">Use this token</button>
  <div class="muted">Kept in this tab only (session storage); sent as <code>Authorization: Bearer</code>.</div>
</section>

<section>
  <form id="classify-form">
    <label for="review">Review</label>
    <textarea id="review" name="review" placeholder="A superb film: the cast is wonderful and the story moves."></textarea>
    <button type="submit" id="classify">Analyse</button>
  </form>
  <div id="result" aria-live="polite"></div>
</section>

<section>
  <form id="batch-form">
    <label for="file">A file of reviews</label>
    <div class="muted">One review per line (.txt), CSV with a <code>text</code> column, JSONL, or an
      aclImdb <code>.tar.gz</code>; every input line gets exactly one output line.</div>
    <input type="file" id="file" name="file">
    <button type="submit" id="upload">Upload</button>
  </form>
  <div id="batch" aria-live="polite"></div>
</section>

<p class="muted">API: <a href="/docs">interactive docs</a> &middot; <a href="/openapi.json">OpenAPI schema</a>
&middot; <code>curl -u TOKEN: -F review="..." http://HOST/v1/classify</code></p>

<script>
"use strict";
const authRequired = document.body.dataset.authRequired === "true";
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
};
function token() { return sessionStorage.getItem("sentiment-token") || ""; }
function headers() { return authRequired ? {"Authorization": "Bearer " + token()} : {}; }
if (authRequired) {
  document.getElementById("auth").hidden = false;
  document.getElementById("token").value = token();
  document.getElementById("save-token").addEventListener("click", () => {
    sessionStorage.setItem("sentiment-token", document.getElementById("token").value.trim());
  });
}
async function call(url, options = {}) {
  if (authRequired) sessionStorage.setItem("sentiment-token", document.getElementById("token").value.trim());
  const response = await fetch(url, {...options, headers: {...headers(), ...(options.headers || {})}});
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); if (body.error) message = body.error; } catch (e) {}
    throw new Error(message);
  }
  return response;
}
function showError(box, error) { box.replaceChildren(el("p", {class: "error"}, error.message)); }

function colour(weight, scale) {
  const a = Math.min(1, Math.abs(weight) / scale) * 0.75 + 0.1;
  return weight > 0 ? `rgba(46, 160, 67, ${a})` : `rgba(214, 51, 51, ${a})`;
}
// Offsets from the server count code points; JavaScript strings count UTF-16 units (an emoji
// is two): cut by code points.
function cutter(text) {
  const chars = Array.from(text);
  return (a, b) => chars.slice(a, b).join("");
}
function heatMap(text, highlights) {
  const cut = cutter(text);
  const box = el("div", {class: "heat", id: "heatmap"});
  const scale = Math.max(1e-6, ...highlights.map(h => Math.abs(h[2])));
  let pos = 0;
  for (const [start, end, weight] of highlights) {
    if (start < pos) continue;
    box.append(cut(pos, start));
    box.append(el("span", {class: "w", style: `background:${colour(weight, scale)}`,
                           title: `${weight > 0 ? "+" : ""}${weight.toFixed(3)} toward positive`},
                  cut(start, end)));
    pos = end;
  }
  box.append(cut(pos));
  return box;
}
function showResult(text, data) {
  const box = document.getElementById("result");
  const r = data.results[0];
  if (r.error) { box.replaceChildren(el("p", {class: "error"}, r.error)); return; }
  const confidence = r.scores[r.label];
  const verdict = r.verdict || r.label;
  const children = [
    el("p", {}, el("span", {class: "label " + r.label, id: "label"}, r.label),
       " ", el("span", {id: "confidence"}, `${(100 * confidence).toFixed(1)}% confident`),
       r.uncertain ? el("span", {class: "muted"}, " (uncertain)") : "",
       " \u00b7 verdict ", el("span", {class: "label " + verdict, id: "verdict"}, verdict)),
    el("div", {class: "bar", title: `positive ${(100 * r.scores.positive).toFixed(1)}%`},
       el("div", {style: `width:${(100 * r.scores.positive).toFixed(1)}%`})),
    el("p", {class: "legend muted"},
       el("span", {style: "background:rgba(46,160,67,.6)"}, "toward positive"),
       el("span", {style: "background:rgba(214,51,51,.6)"}, "toward negative")),
    heatMap(text, r.highlights || []),
  ];
  const parts = r.sentences || [];
  if (parts.length) {
    const marked = el("div", {class: "sentences", id: "sentences"});
    const cut = cutter(text);
    let pos = 0;
    for (const s of parts) {
      marked.append(cut(pos, s.start));
      const kind = s.uncertain ? "unsure" : s.label;
      const share = (100 * s.scores[s.label]).toFixed(0);
      const why = (s.reasons || []).length ? ` (${s.reasons.join(", ")})` : "";
      marked.append(el("span", {class: "s " + kind, title: `${s.label} ${share}%${why}`},
                       cut(s.start, s.end)));
      pos = s.end;
    }
    marked.append(cut(pos));
    children.push(el("p", {class: "muted"}, "Sentences, each coloured by its own answer:"), marked);
  }
  const about = r.about || {};
  const said = ["positive", "negative"].filter(k => (about[k] || []).length)
    .map(k => `${k} about ${about[k].join(", ")}`);
  if (said.length) children.push(el("p", {id: "about"}, said.join("; ")));
  if ((r.reasons || []).length && (verdict === "positive" || verdict === "negative")) {
    children.push(el("p", {id: "reasons"}, `Why: ${r.reasons.join(", ")}`));
  }
  if ((r.top_phrases || []).length) {
    children.push(el("p", {}, "Top phrases:"),
                  el("ul", {id: "phrases"}, ...r.top_phrases.map(([p, w]) => el("li", {}, `${p} (${w.toFixed(3)})`))));
  }
  children.push(el("p", {class: "muted", id: "version"}, `model ${data.model_version}`));
  box.replaceChildren(...children);
}
document.getElementById("classify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("result");
  const text = document.getElementById("review").value;
  box.replaceChildren(el("p", {class: "muted"}, "Analysing\u2026"));
  try {
    const response = await call("/v1/classify?tokens=true", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({review: text})});
    showResult(text, await response.json());
  } catch (error) { showError(box, error); }
});
document.getElementById("batch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("batch");
  const file = document.getElementById("file").files[0];
  if (!file) { box.replaceChildren(el("p", {class: "error"}, "choose a file first")); return; }
  const form = new FormData(); form.append("file", file);
  box.replaceChildren(el("p", {class: "muted"}, "Uploading\u2026"));
  try {
    const created = await (await call("/v1/batches?sentences=true", {method: "POST", body: form})).json();
    const bar = el("progress", {max: "1", value: "0", id: "batch-progress"});
    const status = el("span", {class: "muted", id: "batch-status"}, " reading the file\u2026");
    const title = el("p", {}, `Batch ${created.batch_id}`);
    box.replaceChildren(title, bar, status);
    for (;;) {
      const progress = await (await call(created.status_url)).json();
      if (progress.state === "failed") throw new Error(progress.error);
      if (progress.state === "ready") {
        bar.value = progress.progress;
        title.textContent = `Batch ${created.batch_id}: ${progress.rows} lines`;
        status.textContent = ` ${progress.rows_done} / ${progress.rows} lines`;
        if (progress.complete) break;
      }
      await new Promise(resolve => setTimeout(resolve, 500));
    }
    const links = el("p", {id: "downloads"}, "Results: ");
    for (const format of ["jsonl", "csv"]) {
      const blob = await (await call(`${created.results_url}?format=${format}`)).blob();
      links.append(el("a", {href: URL.createObjectURL(blob), download: `${created.batch_id}.${format}`,
                            id: `download-${format}`}, format.toUpperCase()), " ");
    }
    const report = await (await call(created.report_url)).blob();
    links.append("\u00b7 ", el("a", {href: URL.createObjectURL(report), target: "_blank",
                                    id: "report-link"}, "Summary (HTML)"));
    box.append(links);
  } catch (error) { showError(box, error); }
});
</script>
</body>
</html>
"""


def render_page(auth_required: bool) -> str:
    """The page; it asks for a token when the server requires one."""
    return PAGE.replace("__AUTH__", "true" if auth_required else "false")
