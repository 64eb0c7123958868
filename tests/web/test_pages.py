"""HTML pages: full page vs htmx partial, escaping, dashboards, explanations (CSRF), steer URLs, ablation."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

HX = {"HX-Request": "true"}
XSS = "<script>alert('x')</script>"


def test_inspect_full_page_and_partial(client):
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text
    assert '<script src="/static/vendor/htmx.min.js"' in page.text and 'id="inspect-result"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    part = client.get("/", params={"text": "The red fox jumps"}, headers=HX)
    assert part.status_code == 200 and "<html" not in part.text
    assert part.text.lstrip().startswith('<section id="inspect-result"')
    assert 'class="tok' in part.text and "/latents/tiny-sae/" in part.text and "margin above θ" in part.text


def test_inspect_escapes_user_text(client):
    r = client.get("/", params={"text": XSS})
    assert r.status_code == 200
    assert XSS not in r.text and "&lt;script&gt;" in r.text


def test_inspect_errors_stay_in_the_partial(client):
    r = client.get("/", params={"text": "word " * 200}, headers=HX)
    assert r.status_code == 422 and 'id="inspect-result"' in r.text and "limit is 64 tokens" in r.text
    r = client.get("/", params={"text": "hi", "sae": "nope"}, headers=HX)
    assert r.status_code == 404 and 'id="inspect-result"' in r.text


def test_htmx_is_served_locally(client):
    r = client.get("/static/vendor/htmx.min.js")
    assert r.status_code == 200 and "htmx" in r.text[:2000]
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200


def test_dashboard_page(client, indexed):
    enc = client.post("/api/encode", json={"text": "The red fox jumps over the lazy dog"}).json()
    latent = enc["top_latents"][0]["latent"]
    r = client.get(f"/latents/tiny-sae/{latent}")
    assert r.status_code == 200
    assert "<svg" in r.text if indexed else "no index" in r.text
    assert f'href="/latents/tiny-sae/{latent + 1}"' in r.text and "Top activations" in r.text
    assert f"/steer?sae=tiny-sae&amp;latent={latent}" in r.text
    part = client.get(f"/latents/tiny-sae/{latent}", headers=HX)
    assert part.text.lstrip().startswith('<section id="dashboard"')
    plain = client.get("/latents/plain-sae/0")
    assert plain.status_code == 200 and "no index yet" in plain.text and 'rel="prev"' not in plain.text


@pytest.mark.parametrize("path", ["/latents/tiny-sae/64", "/latents/tiny-sae/-3", "/latents/nope/1",
                                  "/latents/tiny-sae/abc"])
def test_dashboard_not_found_is_html(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]


def test_random_and_home_redirects(client):
    r = client.get("/latents/tiny-sae/random", follow_redirects=False)
    assert r.status_code == 303
    latent = int(r.headers["location"].rsplit("/", 1)[1])
    assert 0 <= latent < 64
    assert client.get("/latents", follow_redirects=False).headers["location"] == "/latents/tiny-sae/0"


@pytest.fixture
def admin_client(tmp_path, services, indexed):
    """A client on an app with an admin token, logged in (explanations are admin-only since issue 16)."""
    from fastapi.testclient import TestClient

    from tests.web.hardening_support import csrf_field, login, make_app

    with TestClient(make_app(tmp_path, services), raise_server_exceptions=False) as c:
        assert login(c).status_code == 303
        c.csrf = csrf_field(c.get("/latents/tiny-sae/5").text)
        yield c


def test_explanation_save_search_and_escape(admin_client):
    client = admin_client
    r = client.post("/latents/tiny-sae/5/explanation", headers=HX,
                    data={"explanation": f"fruit words {XSS}", "csrf_token": client.csrf})
    assert r.status_code == 200 and "saved" in r.text and XSS not in r.text
    assert client.get("/api/saes/tiny-sae/latents/5").json()["explanation"] == f"fruit words {XSS}"
    page = client.get("/latents/tiny-sae/5")
    assert XSS not in page.text and "fruit words" in page.text
    found = client.get("/latents/tiny-sae/search", params={"q": "fruit"}, headers=HX)
    assert found.text.lstrip().startswith('<div id="search-results"') and "/latents/tiny-sae/5" in found.text
    by_index = client.get("/latents/tiny-sae/search", params={"q": "12"}, headers=HX)
    assert "/latents/tiny-sae/12" in by_index.text


def test_explanation_csrf_and_missing_index(admin_client):
    client = admin_client
    r = client.post("/latents/tiny-sae/5/explanation", data={"explanation": "x", "csrf_token": client.csrf},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/latents/tiny-sae/5/explanation", data={"explanation": "x"})  # no CSRF token
    assert r.status_code == 403
    r = client.post("/latents/plain-sae/5/explanation", data={"explanation": "x", "csrf_token": client.csrf},
                    headers=HX)
    assert r.status_code == 422 and "no index yet" in r.text


def test_steer_page_runs_from_the_url_and_pushes_canonical_url(client):
    r = client.get("/steer", params={"prompt": "The red fox", "latent": "3", "mode": "add", "value": "",
                                     "max_new_tokens": "5", "temperature": "0", "seed": "4"}, headers=HX)
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith('<section id="steer-result"')
    assert 'id="default-text"' in r.text and 'id="steered-text"' in r.text
    q = parse_qs(urlsplit(r.headers["HX-Push-Url"]).query)
    assert q["latent"] == ["3"] and q["mode"] == ["add"] and float(q["value"][0]) > 0  # default filled in
    assert q["seed"] == ["4"] and q["prompt"] == ["The red fox"]
    full = client.get(r.headers["HX-Push-Url"])  # the shared link reproduces the same result
    assert full.status_code == 200 and "<html" in full.text
    default = r.text.split('id="default-text">')[1].split("</span>")[0]
    assert default in full.text


def test_steer_page_prefill_and_errors(client):
    r = client.get("/steer", params={"sae": "tiny-sae", "latent": "7"})
    assert r.status_code == 200 and 'value="7"' in r.text and "Generate" in r.text
    bad = client.get("/steer", params={"prompt": "x", "seed": "abc"}, headers=HX)
    assert bad.status_code == 422 and "seed must be a whole number" in bad.text and 'id="steer-result"' in bad.text
    big = client.get("/steer", params={"prompt": "x", "max_new_tokens": "999"}, headers=HX)
    assert big.status_code == 422 and "between 1 and 24" in big.text
    missing = client.get("/steer", params={"prompt": "x", "latent": "64"}, headers=HX)
    assert missing.status_code == 404
    xss = client.get("/steer", params={"prompt": XSS})
    assert XSS not in xss.text


def test_ablate_page(client):
    r = client.get("/ablate", params={"text": "Alice said: I like green apples", "latent": "1, 2"}, headers=HX)
    assert r.status_code == 200 and r.text.lstrip().startswith('<section id="ablate-result"')
    assert "More likely without the latents" in r.text and 'class="tok' in r.text
    bad = client.get("/ablate", params={"text": "hi", "latent": "x"}, headers=HX)
    assert bad.status_code == 422 and "latent must be a whole number" in bad.text
    page = client.get("/ablate", params={"latent": "4"})
    assert page.status_code == 200 and 'value="4"' in page.text
