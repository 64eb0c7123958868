"""The browser tests' wait helper under the app's Content Security Policy (script-src 'self').

Playwright's wait_for_function evaluates a string predicate with eval inside the page once its first check fails,
which that CSP refuses: the browser tests passed only while the page was faster than the first check (CI on
2026-12-04 failed once under load). `wait_until` polls through page.evaluate instead.
"""

from __future__ import annotations

import time

import pytest

from tests.web.browser_support import MARKS, launch_chromium, wait_until

pytestmark = MARKS

CSP_PAGE = "<html><head><meta http-equiv='Content-Security-Policy' content=\"script-src 'self'\"></head></html>"


@pytest.fixture(scope="module")
def csp_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.set_content(CSP_PAGE)
        yield page
        browser.close()


def _soon() -> int:
    return int(time.time() * 1000) + 300  # a condition false at the first check, true 0.3 s later


def test_wait_for_function_fails_under_the_csp_once_it_must_poll(csp_page) -> None:
    from playwright.sync_api import Error

    with pytest.raises(Error, match="Content Security Policy"):
        csp_page.wait_for_function(f"Date.now() > {_soon()}", timeout=3000)


def test_wait_until_polls_under_the_csp_and_times_out_with_a_message(csp_page) -> None:
    start = time.monotonic()
    wait_until(csp_page, f"Date.now() > {_soon()}")
    assert 0.2 < time.monotonic() - start < 5
    wait_until(csp_page, "t => t === 'x'", "x")
    with pytest.raises(AssertionError, match="timed out after 0.2 s"):
        wait_until(csp_page, "false", timeout_s=0.2)
