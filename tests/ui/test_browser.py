"""The UI in a real browser: Debian's Chromium, headless, driven by Selenium through chromedriver.

`scripts/test` installs `chromium` and `chromium-driver` when it runs as root; elsewhere these
tests skip and say why. Screenshots go to ``.artifacts/screenshots/`` (or ``ENVFLOW_SCREENSHOTS``);
the README's is taken with ``ENVFLOW_SCREENSHOTS=docs/images``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from envflow.models import RunState

from ..support.flows import deploy, write_flow
from ..support.processes import IN_CI
from .helpers import wait_for

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# What Chromium needs on these machines: no sandbox (root), no GPU, and none of its own network
# traffic (it is refused here, and would slow every start).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]
ROOT = Path(__file__).resolve().parents[2]

DEMO = """
    import sys, time
    from envflow import flow

    @flow
    def nightly_report(batches: int = 60, region: str = "eu-west"):
        print(f"loading {batches} batches for {region}", flush=True)
        for i in range(1, batches + 1):
            print(f"batch {i:>3}/{batches}: {1200 + 37 * i} rows, {0.8 + (i % 5) / 10:.1f}s", flush=True)
            if i % 4 == 0:
                print(f"warning: batch {i} had {i % 3 + 1} late rows, kept them", file=sys.stderr, flush=True)
            time.sleep(1)
        print("report written", flush=True)

    @flow
    def show(text: str = ""):
        print(text)
        print(text, file=sys.stderr)
"""
EVIL = "<script>document.body.dataset.pwned='1'</script><img src=x onerror=\"document.body.dataset.pwned='2'\">"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    if not (CHROMIUM and CHROMEDRIVER):
        reason = ("no chromium/chromedriver on PATH: scripts/test installs Debian's chromium and chromium-driver "
                  "when it runs as root (apt-get install chromium chromium-driver)")
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots() -> Path:
    folder = Path(os.environ.get("ENVFLOW_SCREENSHOTS") or ROOT / ".artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def texts(browser, selector: str) -> list[str]:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return [e.text for e in browser.find_elements(By.CSS_SELECTOR, selector)]
    except StaleElementReferenceException:  # the fragment was refreshed while we read it
        return []


def test_live_output_then_cancel(client, start_worker, workdir, venv, ui, browser, screenshots):
    from selenium.webdriver.common.by import By

    flows = write_flow(workdir, DEMO, "reports.py")
    name = deploy(client, flows, "nightly_report", name="eu", virtualenv=str(venv), parameters={"region": "eu-west"})
    start_worker()
    for batches in (2, 3, 1):  # some history for the strip and the runs page
        assert client.run(name, {"batches": batches}).wait(30) is RunState.COMPLETED

    browser.get(f"{ui.base}/deployments/{name}")
    field = browser.find_element(By.NAME, "p:batches")
    field.clear()
    field.send_keys("90")
    browser.find_element(By.CSS_SELECTOR, "form.run-form button[type=submit]").click()
    run_id = wait_for(lambda: (m := re.search(r"/runs/([0-9a-f]{32})$", browser.current_url)) and m.group(1),
                      "the new run's page")
    run = client.get_run(run_id)

    # Lines appear while the flow is still printing them, one a second.
    wait_for(lambda: len(texts(browser, "#output .line")) >= 8, "eight lines in the page")
    assert run.state is RunState.RUNNING
    shown = texts(browser, "#output .line")
    assert shown[:3] == ["loading 90 batches for eu-west", "batch   1/90: 1237 rows, 0.9s", "batch   2/90: 1274 rows, 1.0s"]
    assert texts(browser, "#output .line.e")[0] == "warning: batch 4 had 2 late rows, kept them"
    assert texts(browser, "#output-status") == ["live"]
    browser.save_screenshot(str(screenshots / "ui-run.png"))

    browser.find_element(By.CSS_SELECTOR, "form[action$='/cancel'] button").click()
    browser.switch_to.alert.accept()  # "Cancel this run?"
    wait_for(lambda: texts(browser, "#run-state") == ["CANCELLED"], "the page to show CANCELLED", timeout=60)
    assert run.state is RunState.CANCELLED
    wait_for(lambda: texts(browser, "#output .note")[-1:] == ["» run ended CANCELLED"], "the stream's end")
    assert texts(browser, "#output-status") == ["ended CANCELLED"]

    browser.get(f"{ui.base}/runs")
    wait_for(lambda: run.short_id in " ".join(texts(browser, "#runs-rows td")), "the run in the list")
    browser.save_screenshot(str(screenshots / "ui-runs.png"))
    browser.get(f"{ui.base}/deployments")
    browser.save_screenshot(str(screenshots / "ui-deployments.png"))

    browser.get(f"{ui.base}/")  # the overview: its counts are the runs `run ls` lists
    listed = {s: n for s, n in client.store.queries.state_counts().items() if n}
    assert listed == {RunState.COMPLETED: 3, RunState.CANCELLED: 1}
    assert texts(browser, 'td[data-total="1h"]') == ["4"]
    assert "CANCELLED 1" in browser.find_element(By.CSS_SELECTOR, "svg.chart").get_attribute("aria-label")
    browser.save_screenshot(str(screenshots / "ui-overview.png"))


def test_nothing_from_a_flow_or_a_deployment_runs_in_the_page(client, start_worker, workdir, venv, ui, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    flows = write_flow(workdir, DEMO, "reports.py")
    name = deploy(client, flows, "show", name="show", virtualenv=str(venv), description=EVIL, tags=[EVIL])
    start_worker()
    run = client.run(name, {"text": EVIL})
    assert run.wait(30) is RunState.COMPLETED

    for path in (f"/runs/{run.id}", "/runs", "/deployments", f"/deployments/{name}"):
        browser.get(ui.base + path)
        if path.startswith("/runs/"):
            wait_for(lambda: texts(browser, "#output .note") == ["» run ended COMPLETED"], "the output")
            assert texts(browser, "#output .line") == [EVIL, EVIL]  # shown as text
        assert browser.execute_script("return document.body.dataset.pwned === undefined") is True, path
        assert not browser.find_elements(By.CSS_SELECTOR, "#output img, main img"), path
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
    assert EVIL in browser.find_element(By.TAG_NAME, "main").text  # the description, as text


def test_a_long_output_keeps_the_newest_lines_and_offers_the_rest(client, start_worker, workdir, venv, ui, browser,
                                                                   screenshots):
    """100,000 lines into a page that keeps 5,000: the newest are shown, the rest linked; the main
    thread's long tasks while they arrive are recorded (reported, not asserted)."""
    from selenium.webdriver.common.by import By

    flows = write_flow(workdir, "from envflow import flow\n\n@flow\ndef many(n: int = 100000):\n"
                                "    for i in range(n):\n        print(f'line {i}')\n", "many.py")
    name = deploy(client, flows, "many", virtualenv=str(venv))
    start_worker()
    run = client.run(name)
    assert run.wait(60) is RunState.COMPLETED
    # Long tasks (> 50 ms on the main thread) from the page's first moment on.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONG_TASKS})
    browser.get(f"{ui.base}/runs/{run.id}")
    wait_for(lambda: texts(browser, "#output .note")[-1:] == ["» run ended COMPLETED"], "the output", timeout=120)
    assert texts(browser, "#output .line") == [f"line {i}" for i in range(95_000, 100_000)]
    notice = browser.find_element(By.ID, "output-trimmed")
    assert notice.text.startswith("95,000 earlier lines are not shown here (the page keeps the newest 5,000)")
    link = notice.find_element(By.TAG_NAME, "a").get_attribute("href")
    assert link == f"{ui.base}/runs/{run.id}/output.txt"
    tasks = browser.execute_script("return window.__longTasks")
    (screenshots / "ui-long-output-tasks.json").write_text(json.dumps({"lines": 100_000, "long_tasks_ms": tasks}))

    # Search in what the page holds: the match is marked (text, not markup) and counted, then the next.
    search = browser.find_element(By.ID, "output-search")
    search.send_keys("line 9999")
    wait_for(lambda: texts(browser, "#output-matches") == ["1 of 10"], "the matches counted")
    assert texts(browser, "#output mark.current") == ["line 9999"]
    assert texts(browser, "#output .line.matched")[:2] == ["line 99990", "line 99991"]
    browser.find_element(By.ID, "output-next").click()
    assert texts(browser, "#output-matches") == ["2 of 10"]
    search.clear()
    search.send_keys("no such text")
    wait_for(lambda: texts(browser, "#output-matches") == ["no match in the lines shown"], "no match said")
    assert texts(browser, "#output mark") == []
    browser.find_element(By.ID, "output-first-error").click()
    assert texts(browser, "#output-matches") == ["no stderr line in the lines shown"]


LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver(function (list) {
  for (const entry of list.getEntries()) window.__longTasks.push(Math.round(entry.duration));
}).observe({ type: "longtask", buffered: true });
"""
