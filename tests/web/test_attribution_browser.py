"""The attribution page and the inspect page's layer view in headless Chromium (Debian's, via playwright): rank
the latents behind the next token, measure a row's real ablation effect with its htmx button, follow a target
link; click a token and see its latents at every layer. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest

from tests.web.browser_support import ARTIFACTS, MARKS, launch_chromium, live_server, wait_until
from tests.web.test_attribution_web import layer_services  # noqa: F401  (three SAEs at three hooks)

pytestmark = MARKS


@pytest.fixture(scope="module")
def server(layer_services, tmp_path_factory):  # noqa: F811
    from app.web import Settings, create_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    with live_server(create_app(settings, services=layer_services)) as base:
        yield base


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.console_errors = errors
        yield pg
        browser.close()


def test_attribution_page_ranks_and_measures(page, server):
    page.goto(server + "/attribute")
    page.fill("textarea[name=text]", "The red fox jumps over the lazy dog")
    page.fill("input[name=top_k]", "10")
    page.click("#attribute-form button[type=submit]")
    page.wait_for_selector("#attribution-rows tbody tr")
    assert page.locator("#attribution-rows tbody tr").count() == 10
    assert page.locator("#heat-rows tr.err-row").count() == 3
    assert "text=The%20red%20fox" in page.url  # settings live in the URL
    first = page.locator("#attribution-rows tbody tr").first
    first.locator("button.measure").click()
    value = first.locator(".measured-value")
    value.wait_for()
    measured = float(value.inner_text())
    attribution = float(first.locator("td").nth(5).inner_text())
    assert measured * attribution <= 0 or abs(measured) < 1e-3  # ablating a supporting latent lowers log p
    page.screenshot(path=str(ARTIFACTS / "attribute.png"), full_page=True)
    other = page.locator("a.next-token:not(.current)").first
    token = other.locator("code").inner_text()
    other.click()
    wait_until(page, "t => document.querySelector('#target-token').innerText === t", token)
    assert "target_id=" in page.url
    assert not page.console_errors, page.console_errors


def test_inspect_layer_view_follows_the_clicked_token(page, server):
    page.goto(server + "/")
    page.fill("textarea[name=text]", "The red fox jumps over the lazy dog")
    page.click("#inspect-form button[type=submit]")
    page.wait_for_selector("#layer-top .layer-col")
    assert page.locator("#layer-top .layer-col").count() == 3
    page.locator("#tokens .tok").nth(3).click()
    page.wait_for_selector("#layer-token .layer-col")
    assert page.locator("#layer-token .layer-col").count() == 3
    assert "Token 3" in page.inner_text("#layer-view")
    assert page.locator("#token-latents-3").is_visible()  # the single-SAE panel still follows the click
    page.screenshot(path=str(ARTIFACTS / "inspect-layers.png"), full_page=True)
    assert not page.console_errors, page.console_errors
