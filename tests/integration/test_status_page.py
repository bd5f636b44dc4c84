"""The status page of a real `dockwarden run`, in Debian's headless Chromium driven by selenium."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.apilab import TOKEN, api_section, daemon, request, wait_event, wait_healthy
from tests.integration.upgrade_lab import Side, config, free_port, push_version, wait_serving
from tests.support.registry import Registry

pytestmark = pytest.mark.engine

# Debian's chromium and chromium-driver (scripts/lab.sh installs them); the real binary, not the wrapper
# script, which reads /etc/chromium.d.
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), "")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE = (412, 915)  # CSS pixels of a common Android phone


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM, "chromium is missing: run scripts/lab.sh up"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / f'chromium-{uuid.uuid4().hex[:8]}'}",
    ):
        options.add_argument(flag)
    # A phone's viewport (headless Chromium's windows are at least 500 px wide otherwise).
    metrics = {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 2.0, "mobile": True, "touch": True}
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(browser: webdriver.Chrome, token: str) -> None:
    """Submit the login form and wait for the next page to load."""
    button = browser.find_element(By.CSS_SELECTOR, "button[type=submit]")
    browser.find_element(By.ID, "token").send_keys(token)
    button.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(button))


def test_status_page_shows_an_upgraded_service_after_signing_in(
    web: tuple[str, int, Side], registry: Registry, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """The page asks for the token, refuses a wrong one, and once signed in (an HttpOnly cookie that opens
    the page but not the /v1 API) shows the service upgraded through the API: its state, the running and
    registry digests, the upgrade's result, the retained version and the timeline, fitting a phone's width."""
    name, port, side = web
    listen = f"127.0.0.1:{free_port()}"
    cfg = config(tmp_path, {"web": {"container": name}}, side, extra=api_section(listen, tmp_path / "token"))
    cfg.write_text(cfg.read_text().replace("interval: 1m", "interval: 1h"))
    with daemon(cfg, tmp_path / "daemon.log"):
        wait_healthy(listen)
        wait_event(tmp_path / "daemon.log", "update.cycle_finished")
        _, marker, digest = push_version(side, registry, "app")
        answer = request(listen, "POST", "/v1/update", body=json.dumps({"services": ["web"]}).encode())
        assert [r["result"] for r in answer.json()] == ["upgraded"]
        assert wait_serving(port) == marker

        browser.get(f"http://{listen}/")
        assert name not in browser.page_source
        _sign_in(browser, "wrong")
        assert "Wrong token." in browser.find_element(By.TAG_NAME, "body").text
        _sign_in(browser, TOKEN)
        card = browser.find_element(By.CSS_SELECTOR, "section.card")
        text = card.text
        assert card.find_element(By.TAG_NAME, "h3").text == "web"
        assert name in text
        assert "running" in text
        assert "upgraded" in text
        assert digest[:19] in text  # running, registry and the upgrade's target
        assert "dockwarden-" in text  # the retained version's tag
        timeline = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
        assert "upgrade upgraded" in timeline
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths == [PHONE[0], PHONE[0]], "the page is not a phone's width, or scrolls sideways"
        cookie = browser.get_cookie("dockwarden_session")
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["value"] != TOKEN

        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.execute_cdp_cmd(  # the whole page in one picture
            "Emulation.setDeviceMetricsOverride",
            {"width": PHONE[0], "height": int(height), "deviceScaleFactor": 2, "mobile": True},
        )
        shot = tmp_path / "status-page.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("DOCKWARDEN_SCREENSHOT"):  # how docs/status-page.png is made
            shutil.copyfile(shot, os.environ["DOCKWARDEN_SCREENSHOT"])

        browser.get(f"http://{listen}/v1/status")  # the cookie opens the page only
        assert "a valid bearer token is required" in browser.page_source
