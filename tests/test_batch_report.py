"""``sentiment-enqueue --report``: a real worker answers every sentence, the CSV gains its
columns and the HTML summary opens in a real chromium with figures that match the output."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.local import RedisServer, start_producer, start_worker, stop_processes, wait_for_workers
from shared.store import ModelStore
from tests.conftest import env_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

REVIEWS = [
    "The acting was superb and the music is gorgeous. The plot made no sense.",
    "A wonderful film.<br /><br />I loved every minute of it!",
    "",
    "Dull, boring and far too long. Awful <script>alert(1)</script> ending.",
    "The movie starts at 8pm. The cinema is on Main Street.",
]


def test_enqueue_report_and_sentence_columns(tiny_store: ModelStore, tmp_path: Path) -> None:
    src, out, page = tmp_path / "in.txt", tmp_path / "out.csv", tmp_path / "report.html"
    src.write_text("\n".join(REVIEWS) + "\n")
    with RedisServer.temporary() as server:
        env = env_for(server.url, tiny_store)
        log = tmp_path / "worker.log"
        worker = start_worker(env, "report", log)
        try:
            wait_for_workers(server.url, [worker], [log])
            producer = start_producer(env, src, out, "--report", str(page))
            stdout, _ = producer.communicate(timeout=120)
            assert producer.returncode == 0, stdout.decode()[-2000:]
        finally:
            stop_processes([worker])
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(REVIEWS) and rows[2]["error"] == "empty review"
    assert "sentences" in rows[0] and "verdict" in rows[0]
    for row, text in zip(rows, REVIEWS, strict=True):
        if row["error"]:
            continue
        spans = [part.split(":") for part in row["sentences"].split()]
        assert all(label in ("positive", "negative") for _, label, _ in spans)
        cuts = [tuple(map(int, where.split("-"))) for where, _, _ in spans]
        assert cuts[-1][1] <= len(text) and all(a < b for a, b in cuts)
        assert row["verdict"] in ("positive", "negative", "mixed", "neutral")
    assert len(rows[1]["sentences"].split()) == 2  # split at the <br /> tags
    assert f"report {page}" in stdout.decode()
    html = page.read_text(encoding="utf-8")
    assert "<script>alert" not in html  # the review's markup stays text
    if CHROMIUM and CHROMEDRIVER:
        _check_in_browser(page, [r["verdict"] for r in rows if not r["error"]])


def _check_in_browser(page: Path, verdicts: list[str]) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1200"):
        options.add_argument(arg)
    driver: Any = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(page.as_uri())
        chart = driver.find_element(By.ID, "verdict-chart")
        widths = {}
        for verdict in ("positive", "negative", "mixed", "neutral"):
            bar = chart.find_element(By.ID, f"bar-{verdict}")
            widths[verdict] = float(bar.get_attribute("width") or 0)
            assert f"{verdicts.count(verdict)} (" in chart.text
        most = max(widths, key=widths.__getitem__)
        assert verdicts.count(most) == max(verdicts.count(v) for v in widths)
        assert "5 lines, 4 answered, 1 without an answer" in driver.page_source
        assert not driver.find_elements(By.TAG_NAME, "script")
    finally:
        driver.quit()
