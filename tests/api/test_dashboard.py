"""The dashboard in a real browser (Debian's headless Chromium driven by Selenium) against
`powerflow run --emulate`: it renders the rack, updates live, and an operator action taken
on the page goes through the API (and its audit) and takes effect in the allocation."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import ROOT
from tests.emulator.test_host_end_to_end import Host, running_host, wait_for

ARTIFACTS = ROOT / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with running_host(tmp_path_factory.mktemp("dash"), periods=3) as h:
        yield h


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
              "--disable-dev-shm-usage"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver") or
                                           "/usr/bin/chromedriver"), options=opts)
    yield drv
    drv.quit()


def updates(browser) -> int:
    return int(browser.find_element(By.ID, "live").get_attribute("data-updates") or 0)


def test_history_is_back_filled_at_first_paint_with_axes_and_the_layout_fits(
        host: Host, browser) -> None:
    ran = host.api("/control")["periods"]  # periods the store holds before the page opens
    assert ran >= 3
    browser.get(host.url + "/")
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    wait.until(lambda b: b.find_element(By.ID, "charts").get_attribute("data-backfill"))
    # from the store, not from the stream: every device's chart starts with the past periods
    # (read in one script: the charts are redrawn every period)
    got = browser.execute_script("""
        const c = document.getElementById('chart-gpu0'), b = document.getElementById('chart-bus');
        return {points: +c.dataset.points, bus: +b.dataset.points,
                backfill: +document.getElementById('charts').dataset.backfill,
                ticks: [...c.querySelectorAll('text.tick')].map(t => t.textContent),
                title: c.textContent, busTitle: b.textContent};""")
    assert got["points"] >= ran and got["bus"] >= ran - 1, got
    assert got["backfill"] >= 8 * ran, got
    assert got["ticks"][:3] == ["0", "150", "300"] and len(got["ticks"]) == 6, got  # W to p_max
    assert "(W)" in got["title"] and "(V)" in got["busTitle"]
    legend = browser.find_element(By.CSS_SELECTOR, ".legend").text
    assert all(k in legend for k in ("measured", "forecast", "P95 band", "cap"))
    wait.until(lambda b: updates(b) >= 1)
    # measured bus voltage on each segment, devices on the mesh with their power
    assert re.fullmatch(r"1[12]\.\d{3} V", browser.find_element(By.ID, "busv-A").text)
    assert re.fullmatch(r"gpu0 \d+ W", browser.find_element(By.ID, "devw-gpu0").text)
    # at 1400x1000: the events in view without scrolling, one line per node
    geo = browser.execute_script(
        "const e = document.getElementById('events').getBoundingClientRect();"
        "const r = document.getElementById('noderow-1').getBoundingClientRect();"
        "return [e.top, e.bottom, window.innerHeight, r.height];")
    assert geo[1] <= geo[2] and geo[0] < geo[2] - 150, geo
    assert geo[3] <= 24, geo  # a compact row, not 6-7 wrapped lines
    # a longer range: hours from the same store (raw periods within the hour)
    Select(browser.find_element(By.ID, "range")).select_by_visible_text("1 h")
    wait.until(lambda b: "last 1 h" in b.find_element(By.ID, "charts-title").text)
    wait.until(lambda b: b.execute_script(
        "return +document.getElementById('chart-gpu0').dataset.points") >= ran)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-first-paint.png"))


def test_api_docs_render_from_the_host_alone(host: Host, browser) -> None:
    browser.get(host.url + "/docs")
    wait = WebDriverWait(browser, 20, poll_frequency=0.2)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) > 20)
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(host.url) for u in loaded), loaded  # no CDN
    assert httpx.get(host.url + "/redoc", timeout=5).status_code == 404


def test_dashboard_renders_updates_and_takes_operator_actions(host: Host, browser) -> None:
    browser.get(host.url + "/")
    wait = WebDriverWait(browser, 20, poll_frequency=0.2)
    wait.until(lambda b: updates(b) >= 2)
    assert "rack small" in browser.find_element(By.ID, "title").text
    # the mesh: four nodes regulating, the normally open tie drawn open
    wait.until(lambda b: all("ok" in b.find_element(By.ID, f"node-{i}").get_attribute("class")
                             for i in (1, 2, 3, 4)))
    assert "open" in browser.find_element(By.ID, "tie-D-A").get_attribute("class")
    assert "closed" in browser.find_element(By.ID, "tie-A-B").get_attribute("class")
    assert browser.find_element(By.ID, "flow-A-B").text.endswith(("A A→B", "A B→A"))
    assert browser.find_element(By.ID, "flow-D-A").text == "open"
    # demand vs forecast charts with their band, and the allocation's reasons
    assert browser.find_element(By.CSS_SELECTOR, "#chart-gpu0 polygon.band")
    assert "Demand P95" in browser.find_element(By.ID, "reason").text
    n = updates(browser)
    wait.until(lambda b: updates(b) >= n + 2)  # live: new states keep arriving
    # operator action 1: close the normally open tie by clicking it
    browser.find_element(By.ID, "tiehit-D-A").click()
    wait.until(lambda b: "closed" in b.find_element(By.ID, "tie-D-A").get_attribute("class"))
    alloc = host.api("/allocation")
    assert alloc["closed"][3] is True
    wait_for(lambda: host.node(4)["port_state"] == 1, 10, "node 4 closing its port 0 (tie D-A)")
    # operator action 2: demote a device's priority from the page
    Select(browser.find_element(By.ID, "prio-gpu0")).select_by_visible_text("4")
    wait_for(lambda: host.api("/policy")["policy"]["priorities"].get("gpu0") == 4, 10,
             "gpu0's priority changed through the API")
    audit = host.api("/audit")
    assert [a["path"] for a in audit][-2:] == ["/api/v1/policy", "/api/v1/policy"]
    assert all(a["status"] == 200 and a["who"] == "local" for a in audit[-2:])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    # put things back for whoever runs next
    httpx.put(host.url + "/api/v1/policy", json={"tie_override": {}, "priorities": {}}, timeout=5)


def test_dashboard_shows_the_alarm_and_marks_the_excluded_node(host: Host, browser) -> None:
    httpx.put(host.url + "/api/v1/policy", json={"power_saving": False}, timeout=5)
    browser.get(host.url + "/")
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    wait.until(lambda b: updates(b) >= 2)
    assert not browser.find_element(By.ID, "alarms").is_displayed()
    assert browser.find_element(By.ID, "state").text.startswith("state: ")
    r = httpx.post(host.url + "/api/v1/emulator/faults",
                   json={"kind": "converter-failure", "node": 2}, timeout=5)
    assert r.status_code == 200
    try:
        wait.until(lambda b: "node_excluded" in b.find_element(By.ID, "alarms").text)
        banner = browser.find_element(By.ID, "alarms")
        assert banner.is_displayed() and "node 2" in banner.text
        wait.until(lambda b: "excluded" in (b.find_element(By.ID, "noderow-2")
                                            .get_attribute("class") or ""))
        assert "EXCLUDED" in browser.find_element(By.ID, "noderow-2").text
        assert "excluded" in browser.find_element(By.ID, "node-2").get_attribute("class")
        assert "DEGRADED" in browser.find_element(By.ID, "state").text
        browser.save_screenshot(str(ARTIFACTS / "dashboard-alarm.png"))
    finally:
        httpx.post(host.url + "/api/v1/emulator/faults",
                   json={"kind": "converter-repair", "node": 2}, timeout=5)
        httpx.post(host.url + "/api/v1/nodes/2/clear-faults", timeout=5)
        httpx.put(host.url + "/api/v1/policy", json={"power_saving": True}, timeout=5)
