"""`synth view` in a real browser: headless Chromium driven by Selenium against the command run as a
user runs it. It lists records, filters rejects by stage, opens records, shows the funnel, and
shows hostile record text as text: nothing in it runs.

Chromium and its driver come from the OS packages (`make test` installs them); without them this
test fails, as the Redis tests do without redis-server."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from synth.shards import read_manifest
from tests.viewer.conftest import HOSTILE_INPUT, HOSTILE_INSTRUCTION, HOSTILE_OUTPUT

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _browser():
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            pytest.fail(
                f"{program} is not installed (`make test` installs it; or apt-get install chromium chromium-driver)"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


class Viewer:
    """`synth view DIR --no-browser --port 0` in a process of its own; its address read from its output."""

    def __init__(self, dataset: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synth.cli", "view", str(dataset), "--no-browser", "--port", "0"],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()

    def url(self, within: float = 60) -> str:
        line = self.lines.get(timeout=within)
        assert line.startswith("serving http://127.0.0.1:"), line
        return line.split()[1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def follow(driver, element) -> None:
    """Click `element` and wait until the page it leads to has replaced this one and loaded.
    While the old page is torn down, Chromium may answer a question about it with an inspector
    error instead of "stale element": that too means "not yet", and the wait asks again."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(page))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


@pytest.mark.e2e
def test_a_browser_lists_filters_and_opens_records_and_runs_nothing_from_record_text(shaped_dataset):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path, ids = shaped_dataset
    manifest = read_manifest(path)
    viewer = Viewer(path)
    driver = None
    try:
        url = viewer.url()
        driver = _browser()

        driver.get(url)  # the overview: counts and the funnel
        assert driver.find_element(By.CLASS_NAME, "kept-count").text == str(manifest.rows("kept"))
        funnel = driver.find_element(By.CLASS_NAME, "funnel")
        assert "generation / heuristic" in funnel.text and "curation / judge" in funnel.text

        follow(driver, driver.find_element(By.LINK_TEXT, "kept"))  # the list of kept records
        assert len(driver.find_elements(By.CSS_SELECTOR, "tr.record")) == manifest.rows("kept")

        follow(driver, driver.find_element(By.ID, "tab-rejects"))  # rejects, filtered by stage
        Select(driver.find_element(By.ID, "filter-stage")).select_by_value("judge")
        follow(driver, driver.find_element(By.ID, "apply"))
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.record")
        assert "stage=judge" in driver.current_url and len(rows) == 1
        assert "curation / judge" in rows[0].text and "score below 4" in rows[0].text

        follow(driver, rows[0].find_element(By.CLASS_NAME, "record-link"))  # a reject's page
        assert driver.find_element(By.TAG_NAME, "h1").text.startswith("Reject")
        assert "score below 4" in driver.find_element(By.CLASS_NAME, "reject").text

        driver.get(url + "d/0/records?kind=kept")  # search finds the hostile record; open it
        search = driver.find_element(By.ID, "search")
        search.send_keys("__PWNED")
        follow(driver, driver.find_element(By.ID, "apply"))
        assert driver.execute_script("return window.__pwned") is None
        links = driver.find_elements(By.CLASS_NAME, "record-link")
        assert [link.text for link in links] == [ids["hostile"]]
        follow(driver, links[0])
        assert driver.execute_script("return window.__pwned") is None
        shown = {name: driver.find_element(By.ID, f"text-{name}").text for name in ("instruction", "input", "output")}
        assert shown == {"instruction": HOSTILE_INSTRUCTION, "input": HOSTILE_INPUT, "output": HOSTILE_OUTPUT}
        assert driver.find_elements(By.CSS_SELECTOR, "script, img, a[href^='javascript']") == []
        assert driver.execute_script("return window.__pwned") is None
    finally:
        if driver is not None:
            driver.quit()
        if viewer.process.poll() is not None:
            viewer.stop()
            pytest.fail(f"the viewer ended early: {viewer.process.stderr.read()}")

    stopped_at = time.monotonic()
    viewer.process.send_signal(signal.SIGINT)
    try:
        code = viewer.process.wait(timeout=10)
    finally:
        viewer.stop()
    assert code in (0, 130) and time.monotonic() - stopped_at < 10
    assert "Traceback" not in viewer.process.stderr.read()
