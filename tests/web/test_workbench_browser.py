"""In headless Chromium: move the dashboard's θ slider and see the what-if numbers swap in (htmx, no inline
script, no console errors); /compare draws the scatter, links each point to its SAE, and overlays the dial."""

from __future__ import annotations

import pytest

from tests.web.browser_support import ARTIFACTS, MARKS, live_server, wait_until, watched_page

pytestmark = MARKS


@pytest.fixture(scope="module")
def server(services, tmp_path_factory):
    from app.web import Settings, create_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    with live_server(create_app(settings, services=services)) as base:
        yield base


@pytest.fixture
def page(browser):
    with watched_page(browser, 900) as pg:
        yield pg


def test_theta_slider_updates_the_whatif(page, server):
    counts = [page.request.get(f"{server}/api/saes/tiny-sae/latents/{i}").json()["count"] for i in range(8)]
    busiest = max(range(8), key=counts.__getitem__)
    assert counts[busiest] > 0
    page.goto(server + f"/latents/tiny-sae/{busiest}")
    slider = page.locator("#theta-slider")
    assert slider.count() == 1 and page.locator("svg.theta-hist line.theta").count() == 1
    top = float(slider.get_attribute("max"))
    slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                    str(top / 4))
    page.wait_for_selector("#whatif-density")
    first = page.inner_text("#whatif-threshold")
    assert float(page.inner_text("#whatif-l0")) > 0  # half the stored θ: more active tokens
    slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }",
                    str(top))
    wait_until(page, "t => document.querySelector('#whatif-threshold').textContent !== t", first)
    assert float(page.inner_text("#whatif-l0")) < 0  # twice θ: fewer
    page.screenshot(path=str(ARTIFACTS / "workbench-slider.png"), full_page=True)
    assert page.console_errors == []


def test_compare_page_links_points_and_overlays_the_dial(page, server):
    page.goto(server + "/compare")
    assert page.locator("svg.scatter a.sae-point").count() >= 1
    assert page.locator("#metrics-table tbody tr").count() == 2
    page.select_option("select[name=dial]", "tiny-sae")
    page.click("form button[type=submit]")
    page.wait_for_selector("svg.scatter path.dial")
    assert "dial=tiny-sae" in page.url and page.locator("#dial-table tbody tr").count() == 7
    page.screenshot(path=str(ARTIFACTS / "workbench-compare.png"), full_page=True)
    page.click("svg.scatter a.sae-point[data-sae=tiny-sae]")
    page.wait_for_url("**/latents/tiny-sae/0")
    assert page.console_errors == []
