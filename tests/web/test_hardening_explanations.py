"""Issue 16.1: only the admin writes explanations (session + CSRF token, or the bearer token); the dashboard shows
the edit form only to a logged-in admin; a missing field is a 422, never an erase."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.web.hardening_support import BEARER, HX, csrf_field, login, make_app

URL = "/latents/tiny-sae/9/explanation"


@pytest.fixture
def hclient(tmp_path, services, indexed):
    with TestClient(make_app(tmp_path, services), raise_server_exceptions=False) as c:
        yield c
        c.post(URL, data={"explanation": ""}, headers=BEARER)  # leave the shared index as it was


def _explanation(client) -> str | None:
    return client.get("/api/saes/tiny-sae/latents/9").json()["explanation"]


@pytest.mark.parametrize("headers", [HX, {"Origin": "http://testserver"}, {"Referer": "http://testserver/x"},
                                     {**HX, "Origin": "http://testserver"}])
def test_anonymous_writes_are_refused(hclient, headers):
    before = _explanation(hclient)
    r = hclient.post(URL, data={"explanation": "defaced"}, headers=headers)
    assert r.status_code == 401, r.text
    r = hclient.post(URL, data={}, headers=headers)  # the old "erase" request
    assert r.status_code == 401
    assert _explanation(hclient) == before


def test_dashboard_shows_the_form_only_to_the_admin(hclient):
    assert hclient.post(URL, data={"explanation": "colour words"}, headers=BEARER).status_code == 200
    page = hclient.get("/latents/tiny-sae/9")
    assert page.status_code == 200 and "colour words" in page.text
    assert 'name="explanation"' not in page.text and f'action="{URL}"' not in page.text  # read-only
    assert login(hclient).status_code == 303
    page = hclient.get("/latents/tiny-sae/9")
    assert 'name="explanation"' in page.text and csrf_field(page.text)


def test_session_write_needs_its_csrf_token(hclient):
    login(hclient)
    csrf = csrf_field(hclient.get("/latents/tiny-sae/9").text)
    for data in ({"explanation": "x"}, {"explanation": "x", "csrf_token": "forged"}):
        assert hclient.post(URL, data=data, headers=HX).status_code == 403
    r = hclient.post(URL, data={"explanation": "fruit words", "csrf_token": csrf}, headers=HX)
    assert r.status_code == 200 and "saved" in r.text and csrf_field(r.text) == csrf  # the form stays usable
    assert _explanation(hclient) == "fruit words"
    r = hclient.post(URL, data={"explanation": "x", "csrf_token": csrf}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_missing_field_is_422_not_an_erase(hclient):
    assert hclient.post(URL, data={"explanation": "keep me"}, headers=BEARER).status_code == 200
    r = hclient.post(URL, data={}, headers=BEARER)
    assert r.status_code == 422
    assert _explanation(hclient) == "keep me"
    assert hclient.post(URL, data={"explanation": ""}, headers=BEARER).status_code == 200  # explicit clear
    assert not _explanation(hclient)


def test_no_admin_token_means_no_editing(tmp_path, services, indexed):
    app = make_app(tmp_path, services, admin_token=None)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post(URL, data={"explanation": "x"}, headers=HX).status_code == 403
        assert 'name="explanation"' not in c.get("/latents/tiny-sae/9").text
