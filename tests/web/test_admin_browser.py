"""Admin end to end in headless Chromium (Debian's, via the playwright package; never `playwright install`):
log in, launch a small job from the form, watch the widget update, cancel it. Screenshot in test-artifacts/."""

from __future__ import annotations

import pytest

from tests.jobs.fakes import shutdown_runner
from tests.web import admin_fixtures as fx
from tests.web.admin_fixtures import TOKEN, make_admin_app
from tests.web.browser_support import ARTIFACTS, MARKS, launch_chromium, live_server, wait_until

pytestmark = MARKS
corpus_root = fx.corpus_root


@pytest.fixture
def server(tmp_path, services, corpus_root):
    """The admin app under uvicorn in a thread; its jobs run the fake trainer (slow enough to cancel)."""
    app = make_admin_app(tmp_path, services, corpus_root)
    runner = app.state.job_runner
    with live_server(app) as base:
        yield base
    shutdown_runner(runner)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.console_errors = errors
        yield pg
        ctx.close()
        browser.close()


def test_log_in_launch_and_cancel_a_job(page, server):
    page.goto(server + "/admin")
    page.fill("input[name=token]", "wrong")
    page.click("form.admin-login button[type=submit]")
    assert "wrong admin token" in page.content()
    page.fill("input[name=token]", TOKEN)
    page.click("form.admin-login button[type=submit]")
    page.wait_for_selector("#job-form")
    cookie = next(c for c in page.context.cookies() if c["name"] == "jumpscope_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.check("input[name=source][value=activations]")
    page.fill("input[name=activations]", "acts.safetensors")
    page.fill("input[name=model]", "org/model")  # an activation-file job names the LM its activations came from
    page.fill("input[name=d_sae]", "16")
    page.fill("input[name=tokens]", "4096")
    page.fill("input[name=name]", "browser-job")
    page.click("#job-form button[type=submit]")
    page.wait_for_url("**/admin/jobs/*")
    widget = page.locator(".job-widget")
    assert widget.get_attribute("hx-trigger") == "every 2s"
    # The widget refreshes itself: progress appears and the loss plot gets a line.
    page.wait_for_selector(".job-widget[data-status=running] polyline.plot-loss", timeout=15000)
    wait_until(page, "document.querySelector('.job-widget progress').value > 0")
    page.screenshot(path=str(ARTIFACTS / "admin-job.png"), full_page=True)

    page.click("#cancel-job")
    page.wait_for_selector(".job-widget[data-status=cancelled]", timeout=10000)
    assert page.locator(".job-widget").get_attribute("hx-trigger") is None  # polling stopped
    assert page.locator("#resume-job").count() == 1
    page.goto(server + "/admin")
    assert "browser-job" in page.locator("#job-list").inner_text()
    assert "cancelled" in page.locator("#job-list").inner_text()
    assert page.console_errors == []
