"""What the headless-Chromium tests share: Debian's chromium with the required flags, and an app served by
uvicorn in a thread on 127.0.0.1 (never `playwright install`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Module-level `pytestmark` for every browser test file.
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread; yields its base URL and stops it afterwards."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def watched_page(browser, height: int) -> Iterator:
    """A page 1280 px wide in a fresh context; its `console_errors` collect console errors and uncaught exceptions
    (tests assert it stays empty). Creates ARTIFACTS for screenshots; closes the context afterwards."""
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1280, "height": height})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    try:
        yield pg
    finally:
        ctx.close()


def launch_chromium(playwright):
    """Debian's chromium through playwright, with the flags this machine needs."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)


def wait_until(page, expression: str, arg=None, timeout_s: float = 15.0) -> None:
    """Poll `page.evaluate(expression, arg)` until it is truthy. Playwright's wait_for_function polls inside the
    page with eval, which the app's CSP (script-src 'self') refuses once the first check fails; evaluate runs
    through the DevTools protocol, which the CSP does not govern."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {expression!r}")
        page.wait_for_timeout(50)
