"""The /ui/ dashboard in a real headless Chromium: login, the overview and an org's charts showing what the
API, the audit log and /metrics say after a scripted workload, an audit search with exports, logout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.analytics import from_metrics, pull_image, wait_until
from tests.support.components import require, unavailable
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.e2e
TOKEN = "dashboard-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALPINE = build_image("dashboard/alpine", layers=2, layer_size=40_000)
NGINX = build_image("dashboard/nginx", layers=1, layer_size=30_000)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(module_upstream_registry_factory, module_entrepot_server_factory):
    upstream = module_upstream_registry_factory()
    push_image(upstream.url, "library/alpine", "3.19", ALPINE)
    push_image(upstream.url, "library/nginx", "1.27", NGINX)
    server = module_entrepot_server_factory(
        [{"name": "hub", "upstream": upstream.url}, {"name": "quay", "upstream": upstream.url}],
        env={"ENTREPOT_ADMIN_TOKEN": TOKEN}, sections={"analytics": {"traffic_interval_seconds": 0.2}},
        startup_timeout=60)
    for _ in range(3):   # 1 miss, 2 hits
        pull_image(server.url, "hub", "library/alpine", "3.19", ALPINE)
    pull_image(server.url, "hub", "library/nginx", "1.27", NGINX)      # a miss
    pull_image(server.url, "quay", "library/nginx", "1.27", NGINX)     # a miss in another org
    wait_until(lambda: api(server, "summary", org="hub"), lambda s: s["pulls_total"] == 4 and s["fills"] == 5)
    return server


def api(server, kind: str, **params) -> dict:
    response = httpx.get(f"{server.url}/api/v1/analytics/{kind}", params=params, headers=AUTH, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"\ndashboard screenshots: {directory}")
    return directory


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM, CHROMEDRIVER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(10)   # elements of the next page: a click returns before it has loaded
    yield driver
    driver.quit()


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def figure(driver, name: str) -> str:
    element = by_css(driver, f'[data-figure="{name}"]')
    return element.get_attribute("data-value") or element.text


def arrived(driver, part: str) -> None:
    """Wait until the browser shows a page whose URL contains `part` (a click does not wait for it)."""
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 30).until(lambda d: part in d.current_url)


def log_in(driver, server, path: str) -> None:
    driver.get(f"{server.url}{path}")
    assert "/ui/login" in driver.current_url        # no session: redirected to the login form
    by_css(driver, "#token").send_keys(TOKEN)
    by_css(driver, "#login").click()
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 30).until(lambda d: "/ui/login" not in d.current_url)


def test_an_administrator_logs_in_sees_the_numbers_the_api_and_metrics_report_and_logs_out(server, browser,
                                                                                          screenshots):
    driver = browser
    driver.get(f"{server.url}/ui/login")
    by_css(driver, "#token").send_keys("not-the-token")
    by_css(driver, "#login").click()
    assert "not the admin token" in by_css(driver, "[role=alert]").text
    driver.save_screenshot(str(screenshots / "login.png"))

    log_in(driver, server, "/ui/")
    assert driver.current_url.rstrip("/").endswith("/ui")
    session = driver.get_cookie("entrepot_session")
    assert session["httpOnly"] and session["path"] == "/ui"
    summary = {entry["org"]: entry for entry in api(server, "summary")["orgs"]}
    rows = {row.get_attribute("data-org"): row for row in all_css(driver, "#orgs tbody tr[data-org]")}
    assert set(rows) == {"hub", "quay"}
    for org, row in rows.items():
        assert row.find_element("css selector", '[data-figure="pulls_total"]').text == str(summary[org]["pulls_total"])
        assert row.find_element("css selector", '[data-figure="bytes_saved"]').get_attribute("data-value") == \
            str(summary[org]["bytes_saved"])
    assert len(all_css(driver, "#orgs svg.spark")) == 2
    driver.save_screenshot(str(screenshots / "overview.png"))

    rows["hub"].find_element("css selector", "a").click()
    arrived(driver, "/ui/orgs/hub")
    hub = api(server, "summary", org="hub")
    metrics = from_metrics(server.url, "hub")
    assert int(figure(driver, "pulls_total")) == hub["pulls_total"] == sum(metrics["pulls"].values()) == 4
    assert (int(figure(driver, "hit")), int(figure(driver, "miss"))) == (hub["pulls"]["hit"], hub["pulls"]["miss"]) \
        == (metrics["pulls"]["hit"], metrics["pulls"]["miss"]) == (2, 2)
    assert int(figure(driver, "bytes_served")) == hub["bytes_served"] == metrics["bytes_served"]
    assert int(figure(driver, "bytes_from_upstream")) == hub["bytes_from_upstream"] == metrics["bytes_from_upstream"]
    assert int(figure(driver, "bytes_saved")) == hub["bytes_saved"] > 0
    charts = all_css(driver, "svg.chart")
    assert len(charts) == 3
    hits = [float(c.get_attribute("data-value")) for c in charts[0].find_elements("css selector", "circle")
            if c.get_attribute("fill") == "#2563eb"]
    series = api(server, "series", org="hub", metric="pulls.hit", bucket="hour", since="24h")
    assert sum(hits) == sum(point["value"] for point in series["points"]) == 2   # the chart's data is the API's
    assert {line.get_attribute("data-series") for line in charts[2].find_elements("css selector", "polyline")} \
        == {"served", "from upstream"}
    assert "library/alpine" in by_css(driver, "#top").text and "3.19" in by_css(driver, "#top").text
    assert len(all_css(driver, "#recent tbody tr")) == 4
    driver.save_screenshot(str(screenshots / "org.png"))

    driver.get(f"{server.url}/ui/audit")
    from selenium.webdriver.support.ui import Select
    Select(by_css(driver, "select[name=org]")).select_by_visible_text("hub")
    Select(by_css(driver, "select[name=result]")).select_by_visible_text("miss")
    by_css(driver, "#search").click()
    arrived(driver, "result=miss")
    rows = all_css(driver, "#audit tbody tr")
    assert len(rows) == 2 and all("miss" in row.text and "hub" in row.text for row in rows)
    export = by_css(driver, "#export-csv").get_attribute("href")
    assert "org=hub" in export and "result=miss" in export and "format=csv" in export
    csv = httpx.get(export, cookies={"entrepot_session": session["value"]}, timeout=10)
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 3     # a header and the two misses
    assert httpx.get(export, timeout=10, follow_redirects=False).status_code == 303   # not without the session
    driver.save_screenshot(str(screenshots / "audit.png"))

    by_css(driver, "#logout").click()
    arrived(driver, "/ui/login")
    assert driver.get_cookie("entrepot_session") is None
    driver.get(f"{server.url}/ui/orgs/hub")
    assert "/ui/login" in driver.current_url
    if os.environ.get("ENTREPOT_UPDATE_DOCS_SCREENSHOT") == "1":   # refresh the README's picture
        shutil.copy(screenshots / "org.png", Path(__file__).parents[2] / "docs" / "dashboard.png")


def test_the_org_page_is_readable_at_phone_width(server, browser, screenshots):
    driver = browser
    driver.set_window_size(390, 844)
    try:
        log_in(driver, server, "/ui/orgs/hub")
        assert driver.current_url.endswith("/ui/orgs/hub")
        # No sideways scrolling of the page: wide tables scroll inside their own box.
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert by_css(driver, "svg.chart").size["width"] <= 390
        driver.save_screenshot(str(screenshots / "org-phone.png"))
    finally:
        driver.set_window_size(1280, 1000)
