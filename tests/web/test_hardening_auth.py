"""Issue 16.2/7/8: logout and token rotation end a session server-side; cookie_secure; failed logins and bearer
tokens are throttled per client (429 + Retry-After); a short admin token is refused on a public address."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.web.hardening_support import BEARER, TOKEN, csrf_field, login, make_app, session_csrf

COOKIE = "jumpscope_admin"


@pytest.fixture
def app(tmp_path, services):
    return make_app(tmp_path, services)


@pytest.fixture
def hclient(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_logout_kills_the_cookie_for_good(hclient):
    assert login(hclient).status_code == 303
    stolen = hclient.cookies.get(COOKIE)
    assert TOKEN not in stolen
    assert hclient.get("/admin/jobs").status_code == 200
    csrf = session_csrf(hclient)
    assert hclient.post("/admin/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    hclient.cookies.set(COOKIE, stolen)  # a copy of the cookie kept from before the logout
    assert hclient.get("/admin/jobs").status_code == 401
    assert 'name="token"' in hclient.get("/admin").text  # the login form again
    r = hclient.post("/api/admin/jobs", json={"d_sae": 8, "tokens": 10, "activations": "a"},
                     headers={"X-CSRF-Token": csrf})
    assert r.status_code == 401


def test_token_rotation_and_restart_end_sessions(hclient, app, tmp_path, services):
    login(hclient)
    cookie = hclient.cookies.get(COOKIE)
    assert hclient.get("/admin/jobs").status_code == 200
    app.state.settings.admin_token = SecretStr("another-admin-token-9876543210")
    assert hclient.get("/admin/jobs").status_code == 401
    app.state.settings.admin_token = SecretStr(TOKEN)  # back: the revoked session stays dead
    assert hclient.get("/admin/jobs").status_code == 401
    login(hclient)
    cookie = hclient.cookies.get(COOKIE)
    with TestClient(make_app(tmp_path, services), raise_server_exceptions=False) as restarted:
        restarted.cookies.set(COOKIE, cookie)
        assert restarted.get("/admin/jobs").status_code == 401


def test_cookie_secure_setting(tmp_path, services):
    with TestClient(make_app(tmp_path, services), raise_server_exceptions=False) as c:
        assert "secure" not in login(c).headers["set-cookie"].lower()  # plain http, no setting: as before
    with TestClient(make_app(tmp_path, services, cookie_secure=True), raise_server_exceptions=False) as c:
        page = c.get("/admin")  # behind a TLS proxy the app itself sees plain http
        assert "; secure" in page.headers["set-cookie"].lower()
        csrf = csrf_field(page.text)
        r = c.post("/admin/login", data={"token": TOKEN, "csrf_token": csrf}, follow_redirects=False,
                   headers={"Cookie": f"jumpscope_login_csrf={csrf}"})  # httpx keeps Secure cookies from http
        assert r.status_code == 303 and "; secure" in r.headers["set-cookie"].lower()


def test_wrong_bearer_tokens_are_throttled(tmp_path, services):
    app = make_app(tmp_path, services, auth_failures_per_minute=5)
    with TestClient(app, raise_server_exceptions=False) as c:
        for k in range(5):
            assert c.get("/api/admin/jobs", headers={"Authorization": f"Bearer guess-{k}"}).status_code == 401
        r = c.get("/api/admin/jobs", headers={"Authorization": "Bearer guess-6"})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60 and "detail" in r.json()
        assert c.get("/api/admin/jobs", headers=BEARER).status_code == 429  # blocked clients learn nothing
        app.state.auth_throttle.window = 0.0  # the minute has passed
        assert c.get("/api/admin/jobs", headers=BEARER).status_code == 200


def test_wrong_login_passwords_are_throttled(tmp_path, services):
    app = make_app(tmp_path, services, auth_failures_per_minute=3)
    with TestClient(app, raise_server_exceptions=False) as c:
        for _ in range(3):
            assert login(c, "wrong").status_code == 401
        r = login(c)  # even the right token, until the minute is over
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and COOKIE not in c.cookies


def test_throttle_is_per_client_and_forgets_after_the_window():
    from app.web.throttle import FailureThrottle

    t = FailureThrottle(limit=3, window=60.0)
    for k in range(3):
        assert t.retry_after("10.0.0.1", now=100.0 + k) is None
        t.record_failure("10.0.0.1", now=100.0 + k)
    assert t.retry_after("10.0.0.1", now=103.0) == 57
    assert t.retry_after("10.0.0.2", now=103.0) is None
    assert t.retry_after("10.0.0.1", now=160.5) is None  # the first failure left the window


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7"])
def test_short_token_refused_on_a_public_address(monkeypatch, capsys, sae_folder, host):
    import uvicorn

    from app.cli import main

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))
    monkeypatch.setenv("JUMPSCOPE_ADMIN_TOKEN", "short-token")
    assert main(["serve", "--sae", str(sae_folder), "--device", "cpu", "--host", host]) != 0
    err = capsys.readouterr().err.strip()
    assert not started and len(err.splitlines()) == 1 and "16" in err


def test_short_token_only_warned_about_on_loopback(monkeypatch, caplog):
    from app.web.auth import prepare_admin
    from app.web.settings import Settings

    monkeypatch.delenv("JUMPSCOPE_ADMIN_TOKEN", raising=False)
    assert prepare_admin(Settings(admin_token="short-token"), "127.0.0.1") == "short-token"
    assert "short" in caplog.text
    with pytest.raises(ValueError, match="at least 16"):  # loopback behind a proxy is public too
        prepare_admin(Settings(admin_token="short-token", forwarded_allow_ips=["127.0.0.1"]), "127.0.0.1")
