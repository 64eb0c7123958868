"""The workbench over HTTP: what-if API and dashboard partial, sparsity dial API, metrics API, /compare page, and an
edited SAE that loads and serves like any other."""

from __future__ import annotations

import pytest


def dashboard(client, latent, sae="tiny-sae"):
    r = client.get(f"/api/saes/{sae}/latents/{latent}")
    assert r.status_code == 200
    return r.json()


def busiest(client):
    return max(range(8), key=lambda i: dashboard(client, i)["count"])


def test_whatif_api_contract_and_values(client):
    i = busiest(client)
    theta = dashboard(client, i)["threshold"]
    r = client.post(f"/api/saes/tiny-sae/latents/{i}/whatif", json={"threshold": theta})
    assert r.status_code == 200, r.text
    w = r.json()
    assert {"threshold", "density", "l0_change", "fvu_change", "delta_lm_loss_change", "near_misses"} <= set(w)
    assert w["threshold"] == pytest.approx(theta) and w["density"] > 0
    assert w["l0_change"] == w["fvu_change"] == w["delta_lm_loss_change"] == 0.0
    assert w["sample"]["origin"] == "index corpus" and "/" not in w["sample"]["corpus"]
    for e in w["near_misses"]:
        assert set(e) >= {"tokens", "values", "pre"} and e["max"] <= theta
    lower = client.post(f"/api/saes/tiny-sae/latents/{i}/whatif", json={"threshold": theta / 2}).json()
    assert lower["density"] >= w["density"] and lower["l0_change"] == pytest.approx(lower["density"] - w["density"])
    assert lower["delta_lm_loss_change"] is not None


@pytest.mark.parametrize("url,body,status", [
    ("/api/saes/tiny-sae/latents/0/whatif", {"threshold": -1}, 422),
    ("/api/saes/tiny-sae/latents/0/whatif", {"threshold": "x"}, 422),
    ("/api/saes/tiny-sae/latents/0/whatif", {}, 422),
    ("/api/saes/tiny-sae/latents/9999/whatif", {"threshold": 1}, 404),
    ("/api/saes/nope/latents/0/whatif", {"threshold": 1}, 404),
    ("/api/saes/plain-sae/latents/0/whatif", {"threshold": 1}, 409),
    ("/api/saes/tiny-sae/dial", {"factors": [1], "target_l0": 3}, 422),
    ("/api/saes/tiny-sae/dial", {"factors": [0]}, 422),
    ("/api/saes/tiny-sae/dial", {"factors": []}, 422),
])
def test_bad_requests_are_4xx_json(client, url, body, status):
    r = client.post(url, json=body)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    if status == 409:
        assert "/tmp" not in r.json()["detail"]


def test_dial_api(client):
    r = client.post("/api/saes/tiny-sae/dial", json={"factors": [2, 0.5, 1], "lm_loss": False})
    assert r.status_code == 200, r.text
    curve = r.json()["curve"]
    assert [p["factor"] for p in curve] == [0.5, 1, 2]
    assert curve[0]["l0"] >= curve[1]["l0"] >= curve[2]["l0"]
    assert curve[1]["l0"] == pytest.approx(r.json()["baseline"]["l0"])
    t = client.post("/api/saes/tiny-sae/dial", json={"target_l0": curve[2]["l0"], "lm_loss": False}).json()
    assert t["curve"][0]["l0"] == pytest.approx(curve[2]["l0"], abs=0.2)


def test_metrics_api(client):
    r = client.get("/api/saes/tiny-sae/metrics")
    assert r.status_code == 200
    m = r.json()
    assert m["sae"] == "tiny-sae" and m["l0"] == 7.5 and m["fvu"] == 0.25 and m["fvu_ci"] is None
    r = client.get("/api/saes/plain-sae/metrics")
    assert r.status_code == 404 and "jumpscope eval" in r.json()["detail"]
    assert client.get("/api/saes/nope/metrics").status_code == 404


def test_dashboard_has_the_theta_panel_and_whatif_partial(client):
    i = busiest(client)
    d = dashboard(client, i)
    page = client.get(f"/latents/tiny-sae/{i}").text
    assert 'class="theta-hist"' in page and 'id="theta-slider"' in page and "/static/workbench.css" in page
    assert "Near misses" in page
    r = client.get(f"/latents/tiny-sae/{i}/whatif", params={"threshold": d["threshold"] * 0.8},
                   headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'id="whatif-density"' in r.text and "<html" not in r.text
    r = client.get(f"/latents/tiny-sae/{i}/whatif", params={"threshold": "abc"}, headers={"HX-Request": "true"})
    assert r.status_code == 422 and "threshold must be a number" in r.text
    r = client.get("/latents/plain-sae/0/whatif", params={"threshold": "1"}, headers={"HX-Request": "true"})
    assert r.status_code == 409 and 'class="error"' in r.text


def test_compare_page(client):
    r = client.get("/compare")
    assert r.status_code == 200
    # the fixture's eval.json has L0 and FVU only: one plot, and the other says what is missing
    assert r.text.count('class="scatter"') == 1 and 'data-sae="tiny-sae"' in r.text
    assert "No SAE has L0 and ΔLM loss" in r.text
    assert 'href="/latents/tiny-sae/0"' in r.text and "no eval.json" in r.text  # plain-sae has none
    r = client.get("/compare", params={"dial": "tiny-sae"})
    assert r.status_code == 200 and 'class="dial"' in r.text and 'id="dial-table"' in r.text
    r = client.get("/compare", params={"dial": "plain-sae"})
    assert r.status_code == 409 and 'id="compare-error"' in r.text


def test_an_edited_sae_loads_and_serves(tmp_path, services, settings, sae_folder):
    from fastapi.testclient import TestClient

    from app.sae import load_sae
    from app.web import create_app
    from app.web.services import Services
    from app.workbench.dial import save_edited, scaled_thresholds

    src = load_sae(sae_folder)
    out = save_edited(src, scaled_thresholds(src, 0.5), tmp_path / "tiny-sae-half", sae_folder, {"factor": 0.5})
    fresh = Services(services.lm)
    fresh.register_sae(out)
    with TestClient(create_app(settings, services=fresh), raise_server_exceptions=False) as c:
        assert c.get("/api/saes").json()[0]["id"] == "tiny-sae-half"
        d = c.get("/api/saes/tiny-sae-half/latents/3").json()
        assert d["threshold"] == pytest.approx(float(src.threshold[3]) * 0.5)
        enc = c.post("/api/encode", json={"text": "the red fox", "sae": "tiny-sae-half"})
        assert enc.status_code == 200
