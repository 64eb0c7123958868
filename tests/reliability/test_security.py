"""Security properties of the web app: admin authentication (constant-time), the admin refusing to run without a
token off localhost, path confinement, escaping of user text in every page, body size limits, CSRF on admin
and explanation forms, security headers, and no pickle loading anywhere in app/."""

from __future__ import annotations

import ast
import hmac
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.web import create_app
from tests.reliability.conftest import ADMIN_TOKEN

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
XSS = "<script>alert(1)</script>"
APP_DIR = Path(__file__).resolve().parents[2] / "app"
ADMIN_API = [("GET", "/api/admin/jobs"), ("POST", "/api/admin/jobs"), ("GET", "/api/admin/jobs/abc"),
             ("DELETE", "/api/admin/jobs/abc"), ("POST", "/api/admin/jobs/abc/resume")]


# --- admin authentication ------------------------------------------------------------------------------
WRONG = [None, "", "Bearer", "Bearer ", f"Bearer {ADMIN_TOKEN[:-1]}", f"Bearer {ADMIN_TOKEN}x",
         f"Basic {ADMIN_TOKEN}", f"bearer{ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN.upper()}", "Bearer é\u2028".encode(),
         f"Token {ADMIN_TOKEN}"]


@pytest.mark.parametrize("header", WRONG)
def test_admin_api_refuses_missing_or_wrong_token(rel_client, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in ADMIN_API:
        r = rel_client.request(method, path, headers=headers, json={"d_sae": 8, "tokens": 10, "activations": "a"})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert "detail" in r.json()
    for path in ("/admin/jobs", "/admin/jobs/abc"):
        assert rel_client.get(path, headers=headers).status_code == 401
    page = rel_client.get("/admin", headers=headers)
    assert 'name="token"' in page.text  # the login form, not the job list


def test_right_token_passes(rel_client):
    r = rel_client.get("/api/admin/jobs", headers=BEARER)
    assert r.status_code == 200 and r.json() == []


def test_tokens_are_compared_in_constant_time(rel_client, monkeypatch):
    """Every admin credential check goes through hmac.compare_digest (no `==` on the secret)."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert rel_client.get("/api/admin/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert any(ADMIN_TOKEN.encode() in (a, b) for a, b in calls), "the bearer token was not compared via hmac"
    calls.clear()
    assert rel_client.get("/api/admin/jobs", headers=BEARER).status_code == 200
    assert calls


def test_admin_disabled_without_token(make_settings, rel_services):
    with TestClient(create_app(make_settings(admin_token=None), services=rel_services)) as c:
        for method, path in ADMIN_API:
            r = c.request(method, path, headers=BEARER)
            assert r.status_code in (401, 403) and "detail" in r.json()
        assert c.get("/api/health").status_code == 200  # the rest serves


@pytest.mark.parametrize("host,allowed", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                          ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                          ("192.168.1.7", False), ("example.org", False), ("", False)])
def test_admin_needs_a_token_unless_bound_to_localhost(make_settings, host, allowed):
    from app.web.auth import prepare_admin

    settings = make_settings(admin_token=None)
    token = prepare_admin(settings, host)
    if allowed:  # a one-run random token, set on the settings
        assert token and len(token) >= 16 and settings.admin_token_value() == token
    else:  # the admin stays off: no token to log in with
        assert not token and settings.admin_token_value() is None
    configured = make_settings()
    assert prepare_admin(configured, host) == ADMIN_TOKEN  # a configured token works on any address


# --- path confinement ------------------------------------------------------------------------------------
@pytest.fixture
def confined_client(tmp_path, make_settings, rel_services):
    settings = make_settings()
    root = Path(settings.corpus_root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret corpus")
    (outside / "acts.safetensors").write_bytes(b"x")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "sub").mkdir()
    with TestClient(create_app(settings, services=rel_services), raise_server_exceptions=False) as c:
        yield c, root, outside


ESCAPES = ["../outside/secret.txt", "sub/../../outside/secret.txt", "{outside}/secret.txt", "link.txt",
           "linkdir/secret.txt", "~/secret.txt", "sub/\x00x.txt", "/etc/passwd", "....//outside/secret.txt"]


@pytest.mark.parametrize("field", ["corpus", "activations", "model"])
@pytest.mark.parametrize("escape", ESCAPES)
def test_job_paths_are_confined_to_the_corpus_root(confined_client, field, escape):
    client, root, outside = confined_client
    path = escape.format(outside=outside)
    spec = {"d_sae": 8, "tokens": 100}
    if field == "corpus":
        spec.update(corpus=path, model="gpt2")
    elif field == "activations":
        spec.update(activations=path.replace("secret.txt", "acts.safetensors"))
    else:
        spec.update(corpus="sub", model=path.replace("/secret.txt", ""))
    r = client.post("/api/admin/jobs", json=spec, headers=BEARER)
    assert 400 <= r.status_code < 500, (spec, r.status_code, r.text)
    assert "detail" in r.json()
    assert client.get("/api/admin/jobs", headers=BEARER).json() == []  # nothing was queued


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "x" * 300, "a\x00b", "<script>"])
def test_job_names_cannot_escape_the_saes_folder(confined_client, name):
    client, *_ = confined_client
    r = client.post("/api/admin/jobs", json={"name": name, "d_sae": 8, "tokens": 100, "activations": "x"},
                    headers=BEARER)
    assert r.status_code == 422 and "detail" in r.json()


@pytest.mark.parametrize("sae", ["..", "../good-sae", "%2e%2e%2fetc", "/etc/passwd", "good-sae/../plain-sae"])
def test_sae_ids_are_ids_not_paths(rel_client, sae):
    r = rel_client.post("/api/encode", json={"text": "red fox", "sae": sae})
    assert r.status_code == 404 and "detail" in r.json()


# --- escaping of user text -------------------------------------------------------------------------------
def _assert_escaped(html: str) -> None:
    assert XSS not in html and "<script>alert" not in html, "user text reached the page unescaped"


def test_prompt_is_escaped_in_inspect_and_steer(rel_client):
    r = rel_client.get("/", params={"text": XSS})
    assert r.status_code == 200
    _assert_escaped(r.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text  # echoed in the form, escaped
    r = rel_client.get("/steer", params={"prompt": XSS, "latent": "3", "mode": "add", "value": "2",
                                         "max_new_tokens": "4"})
    assert r.status_code == 200
    _assert_escaped(r.text)
    assert "&lt;script&gt;" in r.text
    r = rel_client.get("/", params={"text": XSS}, headers={"HX-Request": "true"})  # the htmx partial too
    _assert_escaped(r.text)


def test_explanation_and_search_are_escaped(rel_client, rel_saes):
    r = rel_client.post("/latents/good-sae/3/explanation", data={"explanation": XSS}, headers=BEARER)
    assert r.status_code == 200, r.text
    _assert_escaped(r.text)
    try:
        page = rel_client.get("/latents/good-sae/3")
        assert page.status_code == 200
        _assert_escaped(page.text)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        found = rel_client.get("/latents/good-sae/search", params={"q": "alert"})
        _assert_escaped(found.text)
        _assert_escaped(rel_client.get("/latents/good-sae/search", params={"q": XSS}).text)
    finally:
        rel_client.post("/latents/good-sae/3/explanation", data={"explanation": ""}, headers=BEARER)


@pytest.mark.parametrize("path", [f"/latents/{XSS}/1", f"/latents/good-sae/{XSS}", f"/{XSS}",
                                  f"/latents/good-sae/search?q={XSS}", f"/?sae={XSS}&text=x"])
def test_error_pages_escape_the_url(rel_client, path):
    r = rel_client.get(path, headers={"Accept": "text/html"})
    assert r.status_code < 500
    _assert_escaped(r.text)


# --- body size -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/encode", "/api/steer", "/api/admin/jobs", "/latents/good-sae/1/explanation"])
def test_ten_megabyte_body_is_413_json(rel_client, path):
    big = b'{"text": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    r = rel_client.post(path, content=big, headers={"content-type": "application/json", **BEARER})
    assert r.status_code == 413 and "detail" in r.json()


def test_streamed_body_without_length_is_cut_off(rel_client):
    def chunks():
        for _ in range(200):
            yield b"a" * 65536  # 12.5 MB, sent chunked with no Content-Length

    r = rel_client.post("/api/encode", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "detail" in r.json()


# --- CSRF --------------------------------------------------------------------------------------------------
def _csrf_field(html: str) -> str:
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    assert m, "no csrf_token field in the form"
    return m.group(1)


def _login(client: TestClient) -> str:
    """Log in through the form; returns the session's CSRF token from the admin page."""
    page = client.get("/admin")
    r = client.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": _csrf_field(page.text)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert ADMIN_TOKEN.lower() not in cookie  # the cookie never holds the token itself
    return _csrf_field(client.get("/admin").text)


def test_login_form_needs_its_csrf_token(rel_client):
    rel_client.get("/admin")
    r = rel_client.post("/admin/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert r.status_code == 403 and "jumpscope_admin" not in r.headers.get("set-cookie", "")
    r = rel_client.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403


def test_admin_forms_need_the_session_csrf_token(rel_client):
    csrf = _login(rel_client)
    form = {"d_sae": "8", "tokens": "100", "source": "activations", "activations": "missing.safetensors"}
    for data in (form, {**form, "csrf_token": "forged"}, {**form, "csrf_token": ""}):
        r = rel_client.post("/admin/jobs", data=data, follow_redirects=False)
        assert r.status_code == 403, r.text
    # With the right token it gets past CSRF (the spec then fails: the file does not exist).
    r = rel_client.post("/admin/jobs", data={**form, "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code in (400, 404, 422) and r.status_code != 403
    # The cookie alone cannot drive the JSON API either (it needs the bearer token or X-CSRF-Token).
    r = rel_client.post("/api/admin/jobs", json={"d_sae": 8, "tokens": 100, "activations": "x"})
    assert r.status_code == 403
    for path in ("/admin/jobs/abc/cancel", "/admin/jobs/abc/resume", "/admin/logout"):
        assert rel_client.post(path, follow_redirects=False).status_code == 403


def test_explanation_form_refuses_cross_site_posts(rel_client):
    for headers in ({}, {"Origin": "http://evil.example"}, {"HX-Request": "true", "Origin": "http://testserver"}):
        r = rel_client.post("/latents/good-sae/3/explanation", data={"explanation": "pwned"}, headers=headers)
        assert r.status_code == 401, headers  # explanations are admin-only
    csrf = _login(rel_client)
    for data, headers in (({"explanation": "pwned"}, {}),  # the session cookie alone is not enough
                          ({"explanation": "pwned", "csrf_token": csrf}, {"Origin": "http://evil.example"}),
                          ({"explanation": "pwned", "csrf_token": csrf}, {"Referer": "https://evil.example/x"})):
        r = rel_client.post("/latents/good-sae/3/explanation", data=data, headers=headers)
        assert r.status_code == 403, headers


# --- security headers ----------------------------------------------------------------------------------
def _csp(value: str) -> dict[str, list[str]]:
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


@pytest.mark.parametrize("path", ["/", "/steer", "/latents/good-sae/0", "/admin", "/no/such/page", "/api/health"])
def test_security_headers(rel_client, path):
    r = rel_client.get(path)
    h = r.headers
    assert h.get("x-content-type-options") == "nosniff"
    assert h.get("referrer-policy") in ("same-origin", "no-referrer", "strict-origin-when-cross-origin")
    csp = _csp(h.get("content-security-policy", ""))
    assert csp.get("default-src") == ["'self'"], csp
    assert h.get("x-frame-options", "").upper() == "DENY" or csp.get("frame-ancestors") in (["'none'"], ["'self'"])
    for directive, sources in csp.items():
        for s in sources:  # only our own origin (and data: images for inline SVG/PNG); no inline/eval/CDN
            assert s in ("'self'", "'none'") or (directive == "img-src" and s == "data:"), (directive, s)


# --- no pickle ---------------------------------------------------------------------------------------------
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def pickle_uses(source: str, filename: str = "<src>") -> list[str]:
    """Where `source` could unpickle: pickle-like imports, torch.load without weights_only=True,
    np.load with allow_pickle not False, pandas read_pickle."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                if n and n.split(".")[0] in PICKLING_MODULES:
                    found.append(f"{filename}:{node.lineno}: imports {n}")
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy") and \
                    any(a.name == "load" for a in node.names):
                found.append(f"{filename}:{node.lineno}: from {node.module} import load (unchecked)")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        kw = {k.arg: k.value for k in node.keywords}
        const = {k: v.value for k, v in kw.items() if isinstance(v, ast.Constant)}
        if name == "load" and owner == "torch" and const.get("weights_only") is not True:
            found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
        if name == "load" and owner in ("np", "numpy") and const.get("allow_pickle", False) is not False:
            found.append(f"{filename}:{node.lineno}: np.load with allow_pickle")
        if name in ("read_pickle", "loads") and owner in ("pd", "pandas", "pickle"):
            found.append(f"{filename}:{node.lineno}: {owner}.{name}")
    return found


def test_the_pickle_scanner_catches_what_it_should():
    bad = ("import pickle\nfrom joblib import load\nimport torch, numpy as np\ntorch.load('x')\n"
           "torch.load('x', weights_only=False)\nnp.load('x', allow_pickle=True)\n")
    assert len(pickle_uses(bad)) == 5
    good = "import torch, numpy as np\ntorch.load('x', weights_only=True)\nnp.load('x', allow_pickle=False)\n"
    assert pickle_uses(good) == []


def test_no_pickle_loading_anywhere_in_app():
    files = sorted(APP_DIR.rglob("*.py"))
    assert len(files) > 20
    found = [hit for f in files for hit in pickle_uses(f.read_text(), str(f.relative_to(APP_DIR.parent)))]
    assert not found, "\n".join(found)
    text = "\n".join(f.read_text() for f in files)
    assert "allow_pickle=True" not in text and "weights_only=False" not in text
