"""The API's page in a real headless chromium (Selenium + chromedriver): type a review and see
the label and the coloured words; upload a file, watch it finish and download the results.
A screenshot of the answered page is kept as a test artifact."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.local import RedisServer, free_port, start_api, stop_processes, workers
from shared.store import ModelStore
from tests.conftest import env_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.redis_server,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="no chromium/chromedriver (.ci/run installs Debian's)",
    ),
]
TOKEN = "page-token-0123456789abcdef"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture(scope="module")
def site(tiny_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("page")
    with RedisServer.temporary() as server:
        env = env_for(server.url, tiny_store)
        with workers(env, 1, tmp):
            port = free_port()
            api = start_api({**env, "API_TOKENS": TOKEN}, ["--port", str(port)], tmp / "api.log")
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                stop_processes([api])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(tmp_path), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_type_a_review_see_label_and_heat_map_then_upload_and_download(
    site: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(site + "/")
    assert "Text classifier API tester" in browser.page_source
    token = browser.find_element(By.ID, "token")  # the server requires a token: the page asks
    assert token.is_displayed()
    token.send_keys(TOKEN)
    review = "A superb, wonderful film. <b>Not</b> boring at all!"
    browser.find_element(By.ID, "review").send_keys(review)
    browser.find_element(By.ID, "classify").click()
    label = wait.until(ec.visibility_of_element_located((By.ID, "label")))
    assert label.text == "positive"
    assert "% confident" in browser.find_element(By.ID, "confidence").text
    heat = browser.find_element(By.ID, "heatmap")
    assert heat.text == review  # the review as typed: markup shown as text, not rendered
    marked = heat.find_elements(By.CSS_SELECTOR, "span.w")
    assert {m.text for m in marked} >= {"superb", "wonderful"}
    assert all("background" in (m.get_attribute("style") or "") for m in marked)
    assert browser.find_element(By.ID, "version").text.startswith("model tiny/")
    # Each sentence of the review coloured with its own answer, the verdict beside the label.
    sentences = browser.find_elements(By.CSS_SELECTOR, "#sentences span.s")
    assert [s.text for s in sentences] == ["A superb, wonderful film.", "<b>Not</b> boring at all!"]
    for s in sentences:
        kind = (s.get_attribute("class") or "").split()[-1]
        assert kind in ("positive", "negative", "unsure")
        assert (s.get_attribute("title") or "").split()[0] in ("positive", "negative")
    assert browser.find_element(By.ID, "verdict").text in (
        "positive",
        "negative",
        "mixed",
        "neutral",
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "api-page.png"))
    assert (ARTIFACTS / "api-page.png").stat().st_size > 10_000

    src = tmp_path / "reviews.txt"
    src.write_text("A superb film.\nAwful and boring.\n\n<i>great</i> acting\n")
    browser.find_element(By.ID, "file").send_keys(str(src))
    browser.find_element(By.ID, "upload").click()
    link = wait.until(ec.visibility_of_element_located((By.ID, "download-jsonl")))
    assert browser.find_element(By.ID, "batch-status").text.strip() == "4 / 4 lines"
    link.click()
    downloaded = tmp_path / f"{link.get_attribute('download')}"
    wait.until(lambda _: downloaded.exists())  # chromium renames its .crdownload when done
    lines = downloaded.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[2])["error"] == "empty review"
    rows = [json.loads(line) for line in lines]
    assert all("sentences" in r for r in rows if not r["error"])  # the page asks for them
    browser.save_screenshot(str(ARTIFACTS / "api-page-batch.png"))
    # The batch's summary: verdict shares as bars, counts that match the downloaded lines.
    report = browser.find_element(By.ID, "report-link").get_attribute("href")
    browser.get(report)
    chart = wait.until(ec.visibility_of_element_located((By.ID, "verdict-chart")))
    assert "4 lines, 3 answered, 1 without an answer" in browser.page_source
    verdicts = [r["verdict"] for r in rows if not r["error"]]
    for verdict in ("positive", "negative", "mixed", "neutral"):
        bar = chart.find_element(By.ID, f"bar-{verdict}")
        width = float(bar.get_attribute("width") or 0)
        assert (width > 0) == (verdict in verdicts)
        assert f"{verdicts.count(verdict)} (" in chart.text
    assert not browser.find_elements(By.TAG_NAME, "i")  # review markup is never rendered
    browser.save_screenshot(str(ARTIFACTS / "api-batch-report.png"))


def test_sentences_and_heat_map_cut_right_around_emoji(site: str, browser: Any) -> None:
    """Offsets count code points, JavaScript strings UTF-16 units: text with emoji (two units
    each) and accents is coloured at the right characters."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site + "/")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    review = "I 😍 the pasta 🍝🍝! The waiter 👨\u200d🍳 was rude. Café Müller, never again."
    # ChromeDriver types only the Basic Multilingual Plane: the text goes in as a user pastes it.
    browser.execute_script("document.getElementById('review').value = arguments[0]", review)
    browser.find_element(By.ID, "classify").click()
    spans = "Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)"
    sentences = WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(f"return {spans}", "#sentences span.s") or None
    )
    assert sentences == [
        "I 😍 the pasta 🍝🍝!",
        "The waiter 👨\u200d🍳 was rude.",
        "Café Müller, never again.",
    ]
    heat = browser.execute_script("return document.getElementById('heatmap').textContent")
    assert heat == review
    words = browser.execute_script(f"return {spans}", "#heatmap span.w")
    assert words and all(w.isalpha() for w in words), words  # whole words, nothing shifted


def test_a_wrong_token_shows_a_clear_error(site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site + "/")
    browser.find_element(By.ID, "token").send_keys("not-the-token-at-all")
    browser.find_element(By.ID, "review").send_keys("fine")
    browser.find_element(By.ID, "classify").click()
    error = WebDriverWait(browser, 30).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#result .error"))
    )
    assert "not valid" in error.text
