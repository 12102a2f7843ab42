"""The status page in a real headless Chromium (Selenium), against the daemon on the real stack.

Chromium and its driver are Debian's (``scripts/tools.sh``); Selenium is pointed at
``/usr/bin/chromedriver``, so it never downloads anything. The Redis the daemon watches is a
private instance this test stops; the shared stack is never touched. Screenshots (healthy,
failed, failed in dark mode and on a phone, the failed cycle) land in
``test-artifacts/status-page/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .daemon_process import REPO, DaemonProcess
from .redis_instance import RedisServers

SHOTS = REPO / "test-artifacts" / "status-page"
INTERVAL = 2
TYPO = "INGEST_PROBE_INTERVAL_SECOND"
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
)
# The page reloads itself every second: an element found just before a reload is gone after.
_GONE = (NoSuchElementException, StaleElementReferenceException)


class Browser:
    """A headless Chromium that keeps every console and network entry it saw."""

    def __init__(self, profile: Path) -> None:
        options = webdriver.ChromeOptions()
        for arg in CHROME_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--user-data-dir={profile}")  # fresh: no state, no sync
        options.binary_location = "/usr/bin/chromium"
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path="/usr/bin/chromedriver")
        self.driver = webdriver.Chrome(service=service, options=options)
        self.console: list[dict[str, Any]] = []
        self.requests: list[str] = []

    def collect(self) -> None:
        """Move the browser's console and performance logs (drained on read) into the lists."""
        # get_log is untyped in Selenium: it returns a list of dicts.
        self.console += self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        for entry in self.driver.get_log("performance"):  # type: ignore[no-untyped-call]
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        resources = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        self.requests += list(resources)

    def wait(self, predicate: Callable[[webdriver.Chrome], Any], timeout: float) -> Any:
        """Wait for ``predicate`` while the page keeps reloading; return its value."""
        waiter = WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=_GONE)
        return waiter.until(predicate)

    def row(self, connector: str) -> str:
        """Return the HTML of the connector's row, read in one call (a reload may follow)."""
        element = self.driver.find_element(
            By.CSS_SELECTOR, f'tr.connector[data-connector="{connector}"]'
        )
        return str(element.get_attribute("outerHTML"))

    def readable_on_a_phone_and_in_the_dark(self) -> None:
        """Screenshot the page dark and at a phone's width, where nothing may scroll sideways."""
        dark = {"media": "screen", "features": [{"name": "prefers-color-scheme", "value": "dark"}]}
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
        background = self.driver.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert background == "rgb(13, 17, 23)", background  # the dark palette's --bg
        self.shot("failed-dark")
        phone = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
        widths = self.wait(
            lambda d: d.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            ),
            5,
        )
        assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
        self.shot("failed-phone")
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    def shot(self, name: str) -> Path:
        """Save a screenshot of the current page and return its path."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Start Chromium with a fresh profile; quit it after the test."""
    started = Browser(tmp_path / "chromium-profile")
    yield started
    started.driver.quit()


@pytest.fixture
async def private_redis(
    service_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[RedisServers, int]]:
    """Start a private redis-server for the deployment under test; stop it after."""
    servers = RedisServers(service_env["INGEST_REDIS_SERVER"], tmp_path)
    port = await servers.start()
    yield servers, port
    await servers.close()


def _status(driver: webdriver.Chrome, connector: str) -> str:
    row = driver.find_element(By.CSS_SELECTOR, f'tr.connector[data-connector="{connector}"]')
    return str(row.get_attribute("data-status"))


def _shows(connector: str, status: str) -> Callable[[webdriver.Chrome], bool]:
    """Return a wait condition: the connector's row has ``status``."""
    return lambda driver: _status(driver, connector) == status


def _since(row: str) -> float:
    match = re.search(r'<td class="since"[^>]*><time datetime="([^"]+)">', row)
    assert match is not None, row
    return dt.datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()


async def test_status_page_in_chromium_follows_a_redis_outage(
    service_env: dict[str, str],
    private_redis: tuple[RedisServers, int],
    browser: Browser,
    tmp_path: Path,
) -> None:
    """Healthy, then redis down (refused, since ~stop) without reload; its cycle shows its logs."""
    servers, redis_port = private_redis
    daemon = DaemonProcess(
        {
            "TIMESCALEDB_URL": service_env["TIMESCALEDB_URL"],
            "KAFKA_BOOTSTRAP_SERVERS": service_env["KAFKA_BOOTSTRAP_SERVERS"],
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "INGEST_PROBE_INTERVAL_SECONDS": str(INTERVAL),
            "INGEST_PROBE_TIMEOUT_SECONDS": "1",
            "KAFKA_MANIFEST_PUBLISH": "false",
            # A typo the page must point out (the CLI only warns about it at start).
            TYPO: "5",
        },
        tmp_path / "daemon.log",
    )
    base = await asyncio.to_thread(daemon.start)
    assert urlsplit(base).hostname == "127.0.0.1"
    try:
        await _walk(browser, base, lambda: servers.stop(redis_port))
    finally:
        await asyncio.to_thread(daemon.stop)
    assert not [e for e in browser.console if e["level"] in ("SEVERE", "WARNING")], browser.console
    assert browser.requests, "the performance log recorded no request at all"
    for url in browser.requests:
        parts = urlsplit(url)
        # chrome:// (the blank start tab), data: and about: never reach a network at all.
        if parts.scheme in ("chrome", "data", "about"):
            continue
        assert parts.hostname == "127.0.0.1", url
    assert any(url.startswith(base) for url in browser.requests)


async def _walk(browser: Browser, base: str, stop_redis: Callable[[], Any]) -> None:
    """Drive the page through healthy -> outage -> the failed cycle's detail."""
    driver = browser.driver
    await asyncio.to_thread(driver.get, base + "/")
    for connector in ("timescale", "redis", "kafka"):
        await asyncio.to_thread(browser.wait, _shows(connector, "ok"), 30)
    assert "refresh" in driver.page_source  # the page reloads itself: nobody reloads it below
    warning = await asyncio.to_thread(
        browser.wait,
        lambda d: d.find_element(By.CSS_SELECTOR, "li.config-warning").text,
        5,
    )
    assert f"{TYPO}: unknown variable, ignored; did you mean {TYPO}S?" in warning, warning
    await asyncio.to_thread(browser.shot, "healthy")
    await asyncio.to_thread(browser.collect)

    before = time.time()
    await stop_redis()
    stopped = time.time()
    await asyncio.to_thread(browser.wait, _shows("redis", "down"), 15)
    row = await asyncio.to_thread(browser.wait, lambda d: browser.row("redis"), 5)
    assert '<td class="reason" data-label="reason">refused</td>' in row, row
    since = _since(row)
    assert before <= since <= stopped + INTERVAL, (before, since, stopped)
    assert _status(driver, "timescale") == "ok"
    await asyncio.to_thread(browser.shot, "failed")
    await asyncio.to_thread(browser.readable_on_a_phone_and_in_the_dark)
    await asyncio.to_thread(browser.collect)

    # Pause the refresh (the control on the page), then open the newest failed cycle.
    await asyncio.to_thread(browser.wait, lambda d: d.find_element(By.ID, "refresh-toggle"), 5)
    await asyncio.to_thread(driver.find_element(By.ID, "refresh-toggle").click)
    await asyncio.to_thread(browser.wait, lambda d: d.current_url.endswith("/?refresh=0"), 5)
    assert 'http-equiv="refresh"' not in driver.page_source
    failed = driver.find_elements(
        By.CSS_SELECTOR, '#deployment-local tr.cycle[data-result="failed"]'
    )
    ids = [int(str(row.get_attribute("data-cycle"))) for row in failed]
    assert ids, "no failed cycle listed"
    assert ids[0] == max(ids)
    await asyncio.to_thread(failed[0].find_element(By.TAG_NAME, "a").click)
    await asyncio.to_thread(browser.wait, lambda d: d.current_url.endswith(f"/probes/{ids[0]}"), 5)
    result = driver.find_element(By.CSS_SELECTOR, 'tr.result[data-connector="redis"]')
    assert result.get_attribute("data-status") == "down"
    lines = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "tr.log-line")]
    assert any(
        "probe_completed" in line and "connector=redis" in line and "reason=refused" in line
        for line in lines
    ), lines
    trace = driver.find_element(By.CSS_SELECTOR, "code.trace-id").text
    assert re.fullmatch(r"[0-9a-f]{32}", trace), trace
    assert "ingest_connector_up" in driver.find_element(By.CSS_SELECTOR, "pre.metrics").text
    await asyncio.to_thread(browser.shot, "cycle")
    await asyncio.to_thread(browser.collect)
