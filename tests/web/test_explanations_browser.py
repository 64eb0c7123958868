"""Issue 17.3 in headless Chromium: the inspect page shows each latent's explanation beside its number, and
the per-token table of a clicked token does too."""

from __future__ import annotations

import shutil
from contextlib import closing

import pytest

from tests.web.browser_support import ARTIFACTS, MARKS, launch_chromium, live_server

pytestmark = MARKS

SAE = "expl-browser-sae"
TEXT = "The cat sat on the mat and the dog ran to the park."


@pytest.fixture(scope="module")
def server(sae_folder, indexed, tmp_path_factory):
    """A private copy of the indexed tiny SAE with a label on every latent, served by uvicorn."""
    from app.explain import store
    from app.web import Settings, create_app
    from app.web.services import Services

    folder = tmp_path_factory.mktemp("explain-browser") / SAE
    shutil.copytree(sae_folder, folder)
    with closing(store.open_db(folder / "index.db")) as conn:
        for i in range(64):
            store.put_explanation(conn, i, f"label of {i}", "test")
    services = Services.load(None, [folder], device="cpu")
    with live_server(create_app(Settings(data_dir=tmp_path_factory.mktemp("data")), services=services)) as base:
        yield base


def test_inspect_shows_labels(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{server}/?sae={SAE}&text={TEXT.replace(' ', '+')}")
            rows = page.locator("#top-latents tbody tr")
            assert rows.count() > 0
            for k in range(rows.count()):
                number = rows.nth(k).locator("td").first.locator("a").inner_text()
                label = rows.nth(k).locator(".latent-expl")
                assert label.is_visible()
                assert label.inner_text().strip() == f"· label of {number.lstrip('#')}"
            tokens = page.locator("#tokens .tok")
            busiest = max(range(tokens.count()), key=lambda k: int(tokens.nth(k).get_attribute("title").split()[0]))
            tokens.nth(busiest).click()
            visible = page.locator(".token-latents:not([hidden]) .latent-expl")
            assert visible.count() > 0 and visible.first.is_visible()
            page.screenshot(path=str(ARTIFACTS / "explanations-inspect.png"), full_page=True)
        finally:
            browser.close()
