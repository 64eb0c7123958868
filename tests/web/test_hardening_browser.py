"""Issue 16.1 in headless Chromium: a visitor sees the explanation read-only; after logging in at /admin the
dashboard's form saves through htmx with the session's CSRF token (no CSP errors); after logout it is read-only
again. The server checks the Host header like `jumpscope serve` does."""

from __future__ import annotations

import pytest

from tests.web.browser_support import ARTIFACTS, MARKS, launch_chromium, live_server
from tests.web.hardening_support import BEARER, TOKEN

pytestmark = MARKS
LATENT = "/latents/tiny-sae/11"


@pytest.fixture(scope="module")
def server(services, indexed, tmp_path_factory):
    from app.web import Settings, create_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), admin_token=TOKEN,
                        allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    with live_server(create_app(settings, services=services)) as base:
        yield base
        import httpx

        httpx.post(base + LATENT + "/explanation", data={"explanation": ""}, headers=BEARER)


def test_edit_an_explanation_as_admin(services, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto(server + LATENT)
        assert page.locator("#explanation input[name=explanation]").count() == 0  # read-only for visitors
        page.goto(server + "/admin")
        page.fill("input[name=token]", TOKEN)
        page.click("form.admin-login button[type=submit]")
        page.wait_for_url("**/admin")
        page.goto(server + LATENT)
        page.fill("#explanation input[name=explanation]", "words about foxes")
        page.click("#explanation button[type=submit]")
        page.wait_for_selector("#explanation .ok")  # htmx swapped in the saved partial
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "explanation-admin.png"))
        page.reload()
        assert page.input_value("#explanation input[name=explanation]") == "words about foxes"

        page.goto(server + "/admin")
        page.click("form[action='/admin/logout'] button")
        page.wait_for_url("**/admin")
        page.goto(server + LATENT)
        assert page.locator("#explanation input[name=explanation]").count() == 0
        assert "words about foxes" in page.inner_text("#explanation")
        assert errors == []
        browser.close()
