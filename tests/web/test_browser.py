"""End to end in headless Chromium (Debian's, driven by the playwright package; never `playwright install`):
type a prompt and see latents, open a dashboard, run a steer. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.web.browser_support import ARTIFACTS, MARKS, live_server, wait_until, watched_page

pytestmark = MARKS


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.fixture(scope="module")
def server(services, tmp_path_factory):
    """The app under uvicorn in a thread on 127.0.0.1 and a free port."""
    from app.web import Settings, create_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), max_new_tokens=24)
    with live_server(create_app(settings, services=services)) as base:
        yield base


@pytest.fixture
def page(browser):
    with watched_page(browser, 860) as pg:
        yield pg


def test_type_a_prompt_and_see_latents(page, server):
    page.goto(server + "/")
    page.fill("textarea[name=text]", "The red fox jumps over the lazy dog.")
    page.click("#inspect-form button[type=submit]")
    page.wait_for_selector("#tokens .tok")
    assert _query(page.url)["text"] == ["The red fox jumps over the lazy dog."]  # settings live in the URL
    tokens = page.locator("#tokens .tok")
    assert tokens.count() > 5
    tokens.nth(2).click()
    panel = page.locator("#token-latents-2")
    assert panel.is_visible()
    assert panel.locator("tr").count() > 1 or "No active latents" in panel.inner_text()
    page.locator(".colour-by").first.click()
    assert "coloured by latent #" in page.inner_text("#colour-mode")
    shot = ARTIFACTS / "inspect.png"
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("JUMPSCOPE_UPDATE_SCREENSHOT"):  # refresh the README picture on request only
        docs = Path(__file__).resolve().parents[2] / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(shot, docs / "screenshot.png")
    assert page.console_errors == []


def test_open_a_dashboard(page, server):
    page.goto(server + "/?text=The+red+fox+jumps+over+the+lazy+dog")
    link = page.locator("#top-latents a[href^='/latents/']").first
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url("**" + href)
    latent = int(href.rsplit("/", 1)[1])
    assert f"Latent #{latent}" in page.inner_text("#dashboard h1")
    # caret="initial": playwright's default (hide) injects an inline <style>, which the page's CSP blocks and
    # reports as a console error on the next swap.
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True, caret="initial")
    page.click("a[rel=next]")  # htmx swaps the dashboard partial and pushes the URL
    wait_until(page, f"document.querySelector('#dashboard').dataset.latent === '{latent + 1}'")
    assert page.url.endswith(f"/latents/tiny-sae/{latent + 1}")
    assert page.console_errors == []


def test_run_a_steer(page, server):
    page.goto(server + "/steer?sae=tiny-sae&latent=3")
    page.fill("textarea[name=prompt]", "The red fox")
    page.select_option("#interventions select[name=mode]", "add")
    page.fill("#interventions input[name=value]", "200")
    page.fill("input[name=temperature]", "0")
    page.fill("input[name=max_new_tokens]", "8")
    page.click("#steer-form button[type=submit]")
    page.wait_for_selector("#steered-text")
    assert page.locator("#default-text").count() == 1
    q = _query(page.url)
    assert q["prompt"] == ["The red fox"] and q["mode"] == ["add"] and float(q["value"][0]) == 200
    page.screenshot(path=str(ARTIFACTS / "steer.png"), full_page=False)
    shared = page.url
    steered = page.inner_text("#steered-text")
    page.goto(shared)  # the shared link reproduces the result
    assert page.inner_text("#steered-text") == steered
    assert page.console_errors == []
