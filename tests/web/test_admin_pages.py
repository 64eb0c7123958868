"""Admin pages and auth: login form → HttpOnly SameSite=Strict cookie, CSRF on every state-changing form,
the job widget polls only while the job is active, user input is escaped, and the start-up token check."""

from __future__ import annotations

import re

from pydantic import SecretStr

from app.web import auth
from tests.web import admin_fixtures as fx
from tests.web.admin_fixtures import AUTH, TOKEN, login, wait_for

admin_app, admin_client, corpus_root = fx.admin_app, fx.admin_client, fx.corpus_root  # shared fixtures

FORM = {"source": "activations", "activations": "acts.safetensors", "d_sae": "16", "tokens": "4096",
        "hook": "resid_post", "layer": "0", "model": "org/model", "corpus": ""}


def test_login_sets_a_strict_httponly_cookie(admin_client):
    page = admin_client.get("/admin")
    assert page.status_code == 200 and 'name="token"' in page.text and "Launch" not in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    wrong = admin_client.post("/admin/login", data={"token": "nope", "csrf_token": csrf}, follow_redirects=False)
    assert wrong.status_code == 401 and "wrong admin token" in wrong.text
    assert auth.SESSION_COOKIE not in wrong.cookies
    ok = admin_client.post("/admin/login", data={"token": TOKEN, "csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/admin"
    cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith(auth.SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie  # the cookie is a signed session, never the token
    home = admin_client.get("/admin")
    assert "Launch a training job" in home.text and 'hx-headers=\'{"X-CSRF-Token": "' in home.text
    assert '<a href="/admin" aria-current="page">Admin</a>' in home.text  # the nav shows the admin
    # The cookie also works for the JSON API (reads)...
    assert admin_client.get("/api/admin/jobs").status_code == 200


def test_login_form_needs_its_csrf_token(admin_client):
    admin_client.get("/admin")  # sets the login CSRF cookie
    r = admin_client.post("/admin/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 403 and auth.SESSION_COOKIE not in r.cookies
    r = admin_client.post("/admin/login", data={"token": TOKEN, "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403


def test_state_changing_forms_need_the_session_csrf_token(admin_client):
    csrf = login(admin_client)
    for data in (FORM, {**FORM, "csrf_token": "forged"}, {**FORM, "csrf_token": ""}):
        r = admin_client.post("/admin/jobs", data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    assert admin_client.get("/api/admin/jobs").json() == []
    # Cookie-authenticated JSON writes need the header too; bearer requests do not.
    assert admin_client.post("/api/admin/jobs", json={"d_sae": 8, "tokens": 8, "activations": "acts.safetensors"}
                             ).status_code == 403
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/jobs/")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    assert admin_client.delete(f"/api/admin/jobs/{job_id}").status_code == 403
    assert admin_client.post(f"/admin/jobs/{job_id}/cancel", data={}).status_code == 403
    assert admin_client.get(f"/api/admin/jobs/{job_id}").json()["status"] in ("queued", "running")
    r = admin_client.delete(f"/api/admin/jobs/{job_id}", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert admin_client.post("/admin/logout", data={}).status_code == 403
    out = admin_client.post("/admin/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert admin_client.get("/api/admin/jobs").status_code == 401


def test_csrf_token_of_another_session_is_refused(admin_client, admin_app):
    from fastapi.testclient import TestClient

    csrf_a = login(admin_client)
    with TestClient(admin_app) as other:
        csrf_b = login(other)
        assert csrf_a != csrf_b
        r = other.post("/admin/jobs", data={**FORM, "csrf_token": csrf_a}, follow_redirects=False)
        assert r.status_code == 403


def test_launch_poll_and_cancel_through_the_pages(admin_client):
    csrf = login(admin_client)
    hx = {"HX-Request": "true"}
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "name": "paged"}, headers=hx)
    assert r.status_code == 200 and r.headers["HX-Redirect"].startswith("/admin/jobs/")
    url = r.headers["HX-Redirect"]
    job_id = url.rsplit("/", 1)[1]
    wait_for(admin_client, job_id, lambda j: j["metrics"]["latest"].get("step", 0) >= 2)
    page = admin_client.get(url)
    assert "<html" in page.text and "Job paged" in page.text
    widget = admin_client.get(url, headers=hx)
    assert "<html" not in widget.text and 'hx-trigger="every 2s"' in widget.text
    assert "<polyline" in widget.text and 'id="cancel-job"' in widget.text and "fake train" in widget.text
    listing = admin_client.get("/admin/jobs", headers=hx)
    assert 'hx-trigger="every 2s"' in listing.text and "paged" in listing.text
    cancelled = admin_client.post(f"{url}/cancel", data={"csrf_token": csrf}, headers=hx)
    assert cancelled.status_code == 200 and 'data-status="cancelled"' in cancelled.text
    assert "hx-trigger" not in cancelled.text  # a finished job's widget stops polling
    assert 'id="resume-job"' in cancelled.text
    wait_for(admin_client, job_id, lambda j: job_id not in admin_client.app.state.job_runner._active)
    assert "hx-trigger" not in admin_client.get("/admin/jobs", headers=hx).text
    # Without htmx the cancel/resume forms redirect back to the job page.
    r = admin_client.post(f"{url}/resume", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    admin_client.delete(f"/api/admin/jobs/{job_id}", headers=AUTH)


def test_form_errors_are_shown_and_escaped(admin_client):
    csrf = login(admin_client)
    evil = "<script>alert(1)</script>"
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "activations": evil})
    assert r.status_code == 400 and evil not in r.text and "&lt;script&gt;" in r.text
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "d_sae": "lots"})
    assert r.status_code == 422 and "d_sae" in r.text
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "activations": "../outside.safetensors"})
    assert r.status_code == 400 and "not allowed" in r.text
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "source": "corpus", "corpus": "texts",
                                                "model": ""})
    assert r.status_code == 422 and "model" in r.text  # a corpus job needs a model
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "model": ""})
    assert r.status_code == 422 and "&#39;model&#39;" in r.text  # ... and so does an activation-file job
    r = admin_client.post("/admin/jobs", data={**FORM, "csrf_token": csrf, "tokens": "100"})
    assert r.status_code == 422 and "at least one training batch (4096 tokens)" in r.text
    assert admin_client.get("/api/admin/jobs").json() == []


def test_pages_need_login(admin_client):
    for url in ("/admin/jobs", "/admin/jobs/abc"):
        assert admin_client.get(url).status_code == 401
    assert admin_client.post("/admin/jobs", data=FORM).status_code == 401


# --- auth helpers -----------------------------------------------------------------------------------------
def test_sessions_are_server_side_and_expire():
    from app.web.sessions import SessionStore

    store = SessionStore(ttl=auth.SESSION_TTL)
    sid, session = store.create(TOKEN, now=1000)
    assert TOKEN not in sid and len(sid) >= 40  # a random id; the cookie never holds the token (TOKEN is too long to
    # turn up by chance in it, as "tok" once did)
    assert store.get(sid, TOKEN, now=1060) == session
    assert store.get(sid, "other-token", now=1060) is None  # a new token ends old sessions ...
    assert store.get(sid, TOKEN, now=1060) is None  # ... for good
    sid, _ = store.create(TOKEN, now=1000)
    assert store.get(sid, TOKEN, now=1000 + auth.SESSION_TTL + 1) is None  # expired
    assert store.get(sid + "x", TOKEN, now=1060) is None and store.get(None, TOKEN) is None
    a, sa = store.create(TOKEN, now=1000)
    b, sb = store.create(TOKEN, now=1000)
    assert sa.csrf != sb.csrf
    store.revoke(a)  # logout
    assert store.get(a, TOKEN, now=1060) is None and store.get(b, TOKEN, now=1060) == sb


def test_tokens_compare_in_constant_time(monkeypatch):
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert auth.tokens_equal("abc", "abc") and not auth.tokens_equal("abd", "abc")
    assert not auth.tokens_equal("\udcff", "abc")  # undecodable input neither raises nor matches
    assert len(calls) == 3


class _S:
    def __init__(self, token=None):
        self.admin_token = SecretStr(token) if token else None

    def admin_token_value(self):
        return self.admin_token.get_secret_value() if self.admin_token else None


def test_prepare_admin_refuses_public_bind_without_token(caplog):
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        s = _S()
        assert auth.prepare_admin(s, host) is None and s.admin_token is None  # admin stays off
    assert "admin disabled" in caplog.text
    assert auth.prepare_admin(_S("a-configured-token-123"), "0.0.0.0") == "a-configured-token-123"
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        s = _S()
        token = auth.prepare_admin(s, host)
        assert len(token) >= 24 and s.admin_token_value() == token
