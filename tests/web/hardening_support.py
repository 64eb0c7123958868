"""Helpers for the hardening tests (issue 16): an app with an admin token around the shared model service, and
a login through the form."""

from __future__ import annotations

import re

TOKEN = "hardening-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HX = {"HX-Request": "true"}


def make_app(tmp_path, services, **settings_kw):
    """create_app with an admin token, a data dir under tmp_path and the given settings."""
    from app.web import create_app
    from app.web.settings import Settings

    base = dict(data_dir=tmp_path / "data", admin_token=TOKEN, max_body_bytes=4096)
    base.update(settings_kw)
    return create_app(Settings(**base), services=services)


def csrf_field(html: str) -> str | None:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    return m.group(1) if m else None


def login(client, token: str = TOKEN):
    """Log in through the form; returns the login response (303 on success, the session cookie set)."""
    page = client.get("/admin")
    return client.post("/admin/login", data={"token": token, "csrf_token": csrf_field(page.text)},
                       follow_redirects=False)


def session_csrf(client) -> str:
    """The logged-in session's CSRF token, read from the admin page."""
    value = csrf_field(client.get("/admin").text)
    assert value, "not logged in"
    return value
