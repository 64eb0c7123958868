"""JSON API (SPEC §8): every route, happy path and bad input; errors are 4xx JSON {"detail": ...}."""

from __future__ import annotations

import pytest


def test_health_and_saes(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["device"] == "cpu" and body["saes"] == ["tiny-sae", "plain-sae"]
    saes = {s["id"]: s for s in client.get("/api/saes").json()}
    assert saes["tiny-sae"]["hook"] == "blocks.1.hook_resid_post"
    assert saes["tiny-sae"]["d_in"] == 32 and saes["tiny-sae"]["d_sae"] == 64
    assert saes["tiny-sae"]["metrics"] == {"fvu": 0.25, "l0": 7.5}
    assert saes["plain-sae"]["metrics"] == {} and saes["plain-sae"]["indexed"] is False


def test_encode(client, services):
    r = client.post("/api/encode", json={"text": "The red fox jumps", "top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sae"] == "tiny-sae" and body["tokens"][0] == "<bos>"
    assert len(body["latents_per_token"]) == len(body["tokens"]) == len(body["token_ids"])
    assert all(len(row) <= 5 for row in body["latents_per_token"])
    assert any(body["latents_per_token"][1:]), "the fixture SAE fires on this text"
    other = client.post("/api/encode", json={"text": "The red fox jumps", "sae": "plain-sae"}).json()
    assert other["sae"] == "plain-sae" and other["top_latents"] != body["top_latents"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"text": "hi", "sae": "nope"}, 404, "unknown SAE"),
        ({"text": ""}, 422, None),
        ({"text": "   "}, 400, "empty"),
        ({"text": "word " * 200}, 422, "limit is 64 tokens"),
        ({"text": "hi", "top_k": 33}, 422, "at most 32"),
        ({"text": "hi", "top_k": 0}, 422, None),
        ({"text": 5}, 422, None),
        ({"text": "hi", "unexpected": 1}, 422, None),
        ({}, 422, None),
    ],
)
def test_encode_bad_input(client, body, status, needle):
    r = client.post("/api/encode", json=body)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    if needle:
        assert needle in str(r.json()["detail"])


def test_malformed_and_oversized_bodies(client):
    r = client.post("/api/encode", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "detail" in r.json()
    r = client.post("/api/encode", json={"text": "x" * 5000})
    assert r.status_code == 413 and "limit is 4096 bytes" in r.json()["detail"]


def test_dashboard_from_index(client, indexed):
    enc = client.post("/api/encode", json={"text": "The red fox jumps over the lazy dog"}).json()
    latent = enc["top_latents"][0]["latent"]
    r = client.get(f"/api/saes/tiny-sae/latents/{latent}")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["indexed"] is True and d["latent"] == latent
    for key in ("threshold", "density", "max", "histogram", "top_examples", "interval_examples", "top_logits",
                "bottom_logits", "neighbors", "explanation"):
        assert key in d
    assert d["density"] > 0 and d["max"] > 0 and d["top_examples"]
    ex = d["top_examples"][0]
    assert len(ex["tokens"]) == len(ex["values"])


def test_dashboard_without_index_uses_weights(client):
    d = client.get("/api/saes/plain-sae/latents/7").json()
    assert d["indexed"] is False and d["threshold"] == pytest.approx(0.05, rel=1e-4)
    assert len(d["top_logits"]) == 10 and len(d["neighbors"]) == 10 and d["top_examples"] == []


@pytest.mark.parametrize("path", ["/api/saes/tiny-sae/latents/64", "/api/saes/tiny-sae/latents/-1",
                                  "/api/saes/nope/latents/1", "/api/saes/tiny-sae/latents/99999999999999999999"])
def test_dashboard_not_found(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "detail" in r.json()


def test_dashboard_bad_index_is_4xx(client):
    assert client.get("/api/saes/tiny-sae/latents/abc").status_code == 422


def test_steer(client):
    req = {"prompt": "The red fox", "interventions": [{"latent": 3, "mode": "add", "value": 200.0}],
           "max_new_tokens": 8, "temperature": 0.0, "seed": 1}
    r = client.post("/api/steer", json=req)
    assert r.status_code == 200, r.text
    a = r.json()
    assert set(a) >= {"default", "steered"} and a["default_tokens"] != a["steered_tokens"]
    b = client.post("/api/steer", json={**req, "interventions": []}).json()
    assert b["default"] == a["default"] and b["steered"] == b["default"]


@pytest.mark.parametrize(
    ("patch", "status", "needle"),
    [
        ({"max_new_tokens": 25}, 422, "at most 24"),
        ({"interventions": [{"latent": i, "mode": "clamp", "value": 1} for i in range(5)]}, 422, "at most 4"),
        ({"interventions": [{"latent": 64, "mode": "clamp", "value": 1}]}, 404, "latents 0..63"),
        ({"interventions": [{"latent": 1, "mode": "boost", "value": 1}]}, 422, None),
        ({"interventions": [{"latent": 1, "value": 1e9}]}, 422, None),
        ({"interventions": [{"latent": 1}, {"latent": 1, "mode": "add"}]}, 400, "more than one"),
        ({"temperature": -0.5}, 422, None),
        ({"seed": -1}, 422, None),
        ({"sae": "nope"}, 404, "unknown SAE"),
        ({"prompt": "word " * 200}, 422, "limit is 64"),
    ],
)
def test_steer_bad_input(client, patch, status, needle):
    r = client.post("/api/steer", json={"prompt": "The red fox", "max_new_tokens": 4, **patch})
    assert r.status_code == status, r.text
    if needle:
        assert needle in str(r.json()["detail"])


def test_steer_rejects_nan_value(client):
    body = b'{"prompt": "The fox", "interventions": [{"latent": 1, "value": NaN}]}'
    r = client.post("/api/steer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_ablate(client, services):
    from app.steering import ablation_effect

    enc = client.post("/api/encode", json={"text": "Alice said: I like green apples"}).json()
    latents = [t["latent"] for t in enc["top_latents"][:2]]
    r = client.post("/api/ablate", json={"text": "Alice said: I like green apples", "latents": latents})
    assert r.status_code == 200, r.text
    body = r.json()
    direct = ablation_effect(services.lm, services.get("tiny-sae").sae, "Alice said: I like green apples", latents)
    assert body["tokens"] == direct["tokens"] and body["delta_logprob"][0] is None
    assert body["delta_logprob"][1:] == pytest.approx(direct["delta_logprob"][1:], abs=1e-5)
    assert len(body["top_increased"]) == 10


@pytest.mark.parametrize(
    ("body", "status"),
    [({"text": "hi there", "latents": []}, 422), ({"text": "hi there", "latents": [64]}, 404),
     ({"text": "hi there", "latents": [1, 2, 3, 4, 5]}, 422), ({"text": "hi there", "latents": [-1]}, 422),
     ({"text": "hi", "latents": "1"}, 422), ({"latents": [1]}, 422)],
)
def test_ablate_bad_input(client, body, status):
    r = client.post("/api/ablate", json=body)
    assert r.status_code == status, r.text
    assert "detail" in r.json()


def test_security_headers_and_openapi(client):
    r = client.get("/api/health")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    spec = client.get("/openapi.json").json()
    for path in ("/api/health", "/api/saes", "/api/encode", "/api/saes/{sae}/latents/{latent}", "/api/steer",
                 "/api/ablate"):
        assert path in spec["paths"], path
    assert "SteerRequest" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # Swagger UI works offline
    assert "/static/vendor/swagger-ui-bundle.js" in docs.text
    assert "'unsafe-inline'" not in r.headers["content-security-policy"]  # only /docs relaxes inline scripts
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "htmx.min.js"):
        assert client.get(f"/static/vendor/{name}").status_code == 200, name
    assert client.get("/static/vendor/evil.js").status_code == 404
