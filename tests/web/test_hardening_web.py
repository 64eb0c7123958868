"""Issue 16.1 (Host check), 16.9 (no server paths in unauthenticated answers), 16.11 (the /docs CSP exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.web.services import Services
from tests.web.hardening_support import make_app

LOCAL = ["localhost", "127.0.0.1", "[::1]"]


@pytest.fixture
def local_client(tmp_path, services):
    app = make_app(tmp_path, services, allowed_hosts=LOCAL)
    with TestClient(app, base_url="http://localhost:8000", raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "[::1]"])
def test_local_host_names_are_served(local_client, host):
    assert local_client.get("/api/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io",
                                  "", "[::1", "localhost:80:80", "[::2]:8000"])
def test_other_host_names_get_400(local_client, host):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 still sends Host: evil.example."""
    r = local_client.get("/api/health", headers={"Host": host})
    assert r.status_code == 400 and "Host" in r.json()["detail"]
    r = local_client.post("/latents/tiny-sae/1/explanation", data={"explanation": "x"},
                          headers={"Host": host, "HX-Request": "true", "Origin": f"http://{host}"})
    assert r.status_code == 400


def test_default_allowed_hosts_follow_the_bind_address():
    from app.web.server import default_allowed_hosts

    assert set(default_allowed_hosts("127.0.0.1")) == {"127.0.0.1", *LOCAL}
    assert set(default_allowed_hosts("::1")) == {"[::1]", *LOCAL}
    assert default_allowed_hosts("192.0.2.7") == ["192.0.2.7"]
    assert default_allowed_hosts("0.0.0.0") == ["*"]


def test_serve_checks_the_host_header(monkeypatch, sae_folder):
    import uvicorn

    from app.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.delenv("JUMPSCOPE_ALLOWED_HOSTS", raising=False)
    assert main(["serve", "--sae", str(sae_folder), "--device", "cpu"]) == 0
    with TestClient(seen["app"], base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"Host": "rebound.example:8000"}).status_code == 400


def test_health_shows_names_not_paths(tmp_path, services, sae_folder):
    mine = Services(services.lm)  # own registry, so the shared one stays clean
    mine.saes = dict(services.saes)
    bad = tmp_path / "secret-place" / "bad-sae"
    mine.failed = {str(bad): f"{bad}: cannot read {bad / 'cfg.json'}"}
    with TestClient(make_app(tmp_path, mine), raise_server_exceptions=False) as c:
        r = c.get("/api/health")
        body = r.json()
        assert r.status_code == 200 and "secret-place" not in r.text and str(tmp_path) not in r.text
        assert body["model"] == Path(services.lm.name).name and "/" not in body["model"]
        assert body["failed_saes"] == {"bad-sae": "bad-sae: cannot read bad-sae/cfg.json"}
        assert body["saes"] == ["tiny-sae", "plain-sae"]
        saes = c.get("/api/saes")
        assert str(Path(services.lm.name).parent) not in saes.text
        assert str(Path(services.lm.name).parent) not in c.get("/").text  # the page header too


def test_hub_ids_are_kept():
    from app.web.public_names import model_label

    assert model_label("google/gemma-2-2b") == "google/gemma-2-2b"
    assert model_label("/srv/models/gemma-2-2b") == "gemma-2-2b"


@pytest.mark.parametrize("path", ["/docsx", "/docs/", "/docs/evil", "/docs/oauth2-redirect", "/docs.html"])
def test_only_docs_itself_gets_the_looser_csp(client, path):
    csp = client.get(path, follow_redirects=False).headers["content-security-policy"]
    assert "unsafe-inline" not in csp, path


def test_docs_keeps_its_csp(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "'unsafe-inline'" in r.headers["content-security-policy"]
