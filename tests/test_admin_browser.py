"""The admin page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against the bridge served by uvicorn on a real port.

An admin logs in with an ``admin`` token, finds a person, retries a dead letter and approves
a held run, clicking what a person would click; the database is then asked what happened.
Skipped when Chromium is not installed, unless ``BRIDGE_TEST_REQUIRE_BROWSER=1`` (CI), which
makes a missing browser a failure.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from bridge.config import Settings
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import outbox
from bridge.store import runs
from bridge.store.engine import Database
from tests.conftest import free_port
from tests.test_admin import Site
from tests.test_admin import admin_rules
from tests.test_admin import build_site

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE = "BRIDGE_TEST_REQUIRE_BROWSER"


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile; skipped (or failed when required) without it."""
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def serve(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free port, from a thread of this process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def arrive(browser: Any, url: str) -> None:
    """Wait until a click's navigation lands on ``url`` (a click does not wait for it)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(url))


@pytest.fixture
def served(
    db: Database, catalog: Catalog, settings: Settings, tmp_path: Path
) -> Iterator[tuple[Site, str]]:
    site = asyncio.run(build_site(db, catalog, settings, admin_rules(tmp_path)))
    for url in serve(site.app):
        yield site, url


def test_an_admin_logs_in_finds_a_person_retries_a_dead_letter_and_approves_a_run(
    chromium: Any, served: tuple[Site, str]
) -> None:
    from selenium.webdriver.common.by import By

    site, url = served
    browser = chromium

    # not logged in: every page leads to the login form, and back after it
    browser.get(f"{url}/admin/dead-letters")
    assert browser.current_url.startswith(f"{url}/admin/login?next=")
    browser.find_element(By.ID, "token").send_keys("brg_wrong")
    browser.find_element(By.ID, "login").click()
    assert "not valid" in browser.find_element(By.ID, "login-problem").text
    browser.find_element(By.ID, "token").send_keys(site.admin_token)
    browser.find_element(By.ID, "login").click()
    arrive(browser, f"{url}/admin/dead-letters")
    assert browser.find_element(By.ID, "who").text == "ann"
    cookie = browser.get_cookie("bridge_admin")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # find a person by email: their timeline
    browser.find_element(By.LINK_TEXT, "People").click()
    browser.find_element(By.ID, "q").send_keys("EMP30@example.com")
    browser.find_element(By.ID, "find").click()
    arrive(browser, f"{url}/admin/people/{site.ids[30]}")
    assert browser.find_element(By.ID, "person-name").text == "emp30@example.com"
    dead_row = browser.find_element(By.CSS_SELECTOR, f'#intents tr[data-outbox="{site.dead}"]')
    assert "dead" in dead_row.text and "upsert_account" in dead_row.text
    assert "BEN-2026" in browser.find_element(By.ID, "verdicts").text

    # retry its dead letter
    browser.find_element(By.LINK_TEXT, "Dead letters").click()
    browser.find_element(By.ID, f"retry-{site.dead}").click()
    assert browser.find_element(By.ID, "notice").text == f"dead letter #{site.dead} queued again"
    assert browser.find_elements(By.ID, "no-dead-letters")
    with site.db.read() as conn:
        row = outbox.get(conn, site.dead)
        retried = [e for e in journal.read(conn) if e.op == "errors.retry"]
    assert row is not None and (row["status"], row["attempts"]) == ("pending", 0)
    assert [(e.actor, e.resource_id) for e in retried] == [("ann", site.ids[30])]

    # approve the held run
    browser.find_element(By.LINK_TEXT, "Held runs").click()
    browser.find_element(By.LINK_TEXT, site.held_run).click()
    assert browser.find_element(By.ID, "run-status").text == "quarantined"
    assert "suspend_account" in browser.find_element(By.ID, "run-intents").text
    browser.find_element(By.ID, "approve").click()
    assert "1 intent(s) released" in browser.find_element(By.ID, "notice").text
    assert browser.find_element(By.ID, "run-status").text == "approved"
    with site.db.read() as conn:
        run = runs.get(conn, site.held_run)
        released = outbox.of_run(conn, site.held_run)
    assert run is not None and (run["status"], run["approved_by"]) == ("approved", "ann")
    assert [r["status"] for r in released] == ["pending"]

    # the training report draws its charts
    browser.find_element(By.LINK_TEXT, "Training").click()
    chart = browser.find_element(By.ID, "completion-chart")
    assert chart.find_elements(By.CSS_SELECTOR, "g.bar rect")
    assert chart.size["width"] > 0

    # log out: the pages are closed again
    browser.find_element(By.ID, "logout").click()
    arrive(browser, f"{url}/admin/login")
    browser.get(f"{url}/admin/runs")
    assert browser.current_url.startswith(f"{url}/admin/login")
