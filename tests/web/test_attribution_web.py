"""Across layers on the web: POST /api/attribute and /api/attribute/ablations (happy path and bad input), the
/attribute page with its htmx honesty check, and the inspect page's layer × latent view (/inspect/layers).

The model service here holds three SAEs of the tiny Llama at three hook points (the indexed `tiny-sae` at
blocks.1 resid_post, plus blocks.0 resid_post and blocks.2 mlp_out)."""

from __future__ import annotations

import html

import pytest

from tests.steering.helpers import make_sae

HX = {"HX-Request": "true"}
TEXT = "The red fox jumps over the lazy dog"


@pytest.fixture(scope="session")
def layer_services(sae_folder, indexed, tmp_path_factory, tiny_model_dir):
    from app.web.services import Services

    folders = [sae_folder]
    for name, hook, threshold in (("early", "blocks.0.hook_resid_post", 0.02), ("late-mlp", "blocks.2.hook_mlp_out",
                                                                             0.0015)):
        folder = tmp_path_factory.mktemp("layer-saes") / name
        sae = make_sae(32, 48, seed=len(folders), threshold=threshold, hook=hook)
        sae.cfg.metadata["model_name"] = str(tiny_model_dir("llama"))
        sae.save(folder)
        folders.append(folder)
    return Services.load(None, folders, device="cpu")


@pytest.fixture
def lclient(settings, layer_services):
    from fastapi.testclient import TestClient

    from app.web import create_app

    with TestClient(create_app(settings, services=layer_services), raise_server_exceptions=False) as c:
        yield c


# --- API ---------------------------------------------------------------------------------------------------------
def test_attribute_defaults(lclient, layer_services):
    r = lclient.post("/api/attribute", json={"text": TEXT, "top_k": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    n = len(body["tokens"])
    assert body["position"] == n - 1 and len(body["attributions"]) == 12
    assert set(body["per_sae"]) == {"tiny-sae", "early", "late-mlp"}  # default: every loaded SAE
    assert {row["sae"] for row in body["attributions"]} <= set(body["per_sae"])
    assert body["per_sae"]["late-mlp"]["hook"] == "blocks.2.hook_mlp_out"
    assert len(body["error_attributions"]) == 3 * (n - 1)
    assert body["top_next"][0]["token_id"] == body["target_token"] and body["target_logprob"] < 0
    scores = [abs(x["attribution"]) for x in body["attributions"]]
    assert scores == sorted(scores, reverse=True)


def test_attribute_chosen_saes_position_and_target(lclient):
    ids = lclient.post("/api/encode", json={"text": TEXT}).json()["token_ids"]
    body = {"text": TEXT, "saes": ["early", "early", "late-mlp"], "position": 3, "target_token": ids[4]}
    r = lclient.post("/api/attribute", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert list(out["per_sae"]) == ["early", "late-mlp"] and out["position"] == 3 and out["target_token"] == ids[4]
    assert len(out["tokens"]) == 4 and all(x["position"] <= 3 for x in out["attributions"])
    logit = lclient.post("/api/attribute", json={**body, "objective": "logit"}).json()
    assert logit["objective"] == "logit" and logit["target_logprob"] == pytest.approx(out["target_logprob"])


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"text": TEXT, "saes": ["nope"]}, 404, "unknown SAE"),
    ({"text": TEXT, "position": 99}, 422, "outside the prompt"),
    ({"text": TEXT, "position": -1}, 422, None),
    ({"text": TEXT, "target_token": 10**9}, 422, "outside the vocabulary"),
    ({"text": TEXT, "target_token": "the red fox jumps over the lazy dog"}, 422, "give one token"),
    ({"text": TEXT, "top_k": 33}, 422, "at most 32"),
    ({"text": TEXT, "top_k": 0}, 422, None),
    ({"text": TEXT, "objective": "kl"}, 422, None),
    ({"text": "   "}, 400, "empty"),
    ({"text": "word " * 200}, 422, "limit is 64 tokens"),
    ({"text": TEXT, "extra": 1}, 422, None),
    ({"text": TEXT, "saes": "early"}, 422, None),
    ({}, 422, None),
])
def test_attribute_bad_input(lclient, body, status, needle):
    r = lclient.post("/api/attribute", json=body)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    if needle:
        assert needle in str(r.json()["detail"])


def test_measured_ablations_check_the_rows(lclient):
    out = lclient.post("/api/attribute", json={"text": TEXT, "top_k": 4}).json()
    nodes = [{k: row[k] for k in ("sae", "latent", "position")} for row in out["attributions"]]
    r = lclient.post("/api/attribute/ablations", json={"text": TEXT, "nodes": nodes,
                                                       "target_token": out["target_token"]})
    assert r.status_code == 200, r.text
    measured = r.json()
    assert measured["target_token"] == out["target_token"] and measured["position"] == out["position"]
    assert [{k: m[k] for k in ("sae", "latent", "position")} for m in measured["ablations"]] == nodes
    assert all(m["delta"] != 0 for m in measured["ablations"])


@pytest.mark.parametrize(("nodes", "status", "needle"), [
    ([{"sae": "early", "latent": 48, "position": 1}], 404, "does not exist"),
    ([{"sae": "nope", "latent": 1, "position": 1}], 404, "unknown SAE"),
    ([{"sae": "early", "latent": 1, "position": 40}], 422, "outside positions"),
    ([{"sae": "early", "latent": 1, "position": 1}] * 2 + [{"sae": "early", "latent": 2, "position": 1}] * 31, 422,
     "at most 32"),
    ([], 422, None),
])
def test_measured_ablations_bad_input(lclient, nodes, status, needle):
    r = lclient.post("/api/attribute/ablations", json={"text": TEXT, "nodes": nodes})
    assert r.status_code == status, r.text
    if needle:
        assert needle in str(r.json()["detail"])


# --- pages -------------------------------------------------------------------------------------------------------
def test_attribute_page_and_partial(lclient):
    empty = lclient.get("/attribute")
    assert empty.status_code == 200 and 'id="attribute-form"' in empty.text and "<html" in empty.text
    assert empty.text.count('name="sae"') == 3
    page = lclient.get("/attribute", params={"text": TEXT, "top_k": 8})
    assert page.status_code == 200
    assert page.text.count('class="err-row"') == 3 and 'id="attribution-rows"' in page.text
    assert page.text.count('hx-get="/attribute/measure?') == 8
    assert "/latents/" in page.text and "/steer?sae=" in page.text and "/ablate?sae=" in page.text
    part = lclient.get("/attribute", params={"text": TEXT, "sae": "early"}, headers=HX)
    assert part.text.lstrip().startswith('<section id="attribute-result"') and "<html" not in part.text
    assert part.text.count('class="err-row"') == 1


def test_attribute_page_errors_stay_in_the_partial(lclient):
    r = lclient.get("/attribute", params={"text": TEXT, "sae": "nope"}, headers=HX)
    assert r.status_code == 404 and 'id="attribute-result"' in r.text and "unknown SAE" in r.text
    r = lclient.get("/attribute", params={"text": TEXT, "position": "99"}, headers=HX)
    assert r.status_code == 422 and "outside the prompt" in r.text
    r = lclient.get("/attribute", params={"text": "<script>alert(1)</script>"})
    assert r.status_code == 200 and "<script>alert(1)</script>" not in r.text


def test_measure_button_partial(lclient):
    out = lclient.post("/api/attribute", json={"text": TEXT, "top_k": 1}).json()
    row = out["attributions"][0]
    r = lclient.get("/attribute/measure", params={"text": TEXT, "position": out["position"],
                                                  "target_id": out["target_token"], "sae": row["sae"],
                                                  "latent": row["latent"], "at": row["position"],
                                                  "attribution": row["attribution"]}, headers=HX)
    assert r.status_code == 200 and "measured-value" in r.text and "estimate" in r.text
    bad = lclient.get("/attribute/measure", params={"text": TEXT, "sae": "early", "latent": 999, "at": 1},
                      headers=HX)
    assert bad.status_code == 404 and "does not exist" in bad.text


def test_inspect_layer_view(lclient, layer_services):
    from app.explain import human

    page = lclient.get("/", params={"text": TEXT})
    assert page.status_code == 200 and 'id="layer-view"' in page.text and "/inspect/layers?text=" in page.text
    top = lclient.get("/inspect/layers", params={"text": TEXT}, headers=HX)
    assert top.status_code == 200 and top.text.count('class="layer-col"') == 3 and 'id="layer-top"' in top.text
    enc = lclient.post("/api/encode", json={"text": TEXT, "sae": "tiny-sae"}).json()
    latent = enc["latents_per_token"][2][0]["latent"]
    db = layer_services.get("tiny-sae").index_db
    human.set_explanation(db, latent, "a latent's <explanation>")
    try:
        one = lclient.get("/inspect/layers", params={"text": TEXT, "token": 2}, headers=HX)
    finally:
        human.set_explanation(db, latent, "")
    assert one.status_code == 200 and 'id="layer-token"' in one.text
    assert "a latent&#39;s &lt;explanation&gt;" in one.text  # from the index, escaped
    assert "blocks.0.hook_resid_post" in one.text and "blocks.2.hook_mlp_out" in one.text
    bad = lclient.get("/inspect/layers", params={"text": TEXT, "token": 99}, headers=HX)
    assert bad.status_code == 422 and "outside the prompt" in bad.text


# --- encode and steer across layers ------------------------------------------------------------------------------
def test_encode_several_saes_in_one_request(lclient):
    one = lclient.post("/api/encode", json={"text": TEXT, "top_k": 5}).json()
    r = lclient.post("/api/encode", json={"text": TEXT, "top_k": 5, "saes": ["late-mlp", "early", "late-mlp"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sae"] == "tiny-sae" and list(body["per_sae"]) == ["late-mlp", "early"]
    assert one["per_sae"] is None
    assert {k: body[k] for k in one if k != "per_sae"} == {k: v for k, v in one.items() if k != "per_sae"}
    for sae_id, hook in (("late-mlp", "blocks.2.hook_mlp_out"), ("early", "blocks.0.hook_resid_post")):
        alone = lclient.post("/api/encode", json={"text": TEXT, "top_k": 5, "sae": sae_id}).json()
        part = body["per_sae"][sae_id]
        assert part["hook"] == hook
        assert {k: part[k] for k in ("l0", "latents_per_token", "top_latents")} == \
            {k: alone[k] for k in ("l0", "latents_per_token", "top_latents")}
    assert lclient.post("/api/encode", json={"text": TEXT, "saes": ["early", "nope"]}).status_code == 404
    assert lclient.post("/api/encode", json={"text": TEXT, "saes": "early"}).status_code == 422


def test_steer_with_interventions_at_several_layers(lclient):
    base = {"prompt": "The red fox", "max_new_tokens": 8, "temperature": 0.0}
    both = [{"latent": 3, "mode": "add", "value": 40.0, "sae": "early"},
            {"latent": 5, "mode": "add", "value": 40.0, "sae": "late-mlp"},
            {"latent": 7, "mode": "clamp", "value": 20.0}]  # no sae: the request's (tiny-sae)
    r = lclient.post("/api/steer", json={**base, "interventions": both})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["sae"] == "tiny-sae" and out["steered"] != out["default"]
    one = lclient.post("/api/steer", json={**base, "interventions": both[2:]}).json()
    assert one["default"] == out["default"] and one["steered"] != out["steered"]
    bad = lclient.post("/api/steer", json={**base, "interventions": [{"latent": 1, "sae": "nope"}]})
    assert bad.status_code == 404 and "unknown SAE" in bad.json()["detail"]
    bad = lclient.post("/api/steer", json={**base, "interventions": [{"latent": 48, "sae": "early"}]})
    assert bad.status_code == 404 and "does not exist" in bad.json()["detail"]


def test_steer_page_picks_latents_from_any_loaded_sae(lclient):
    from urllib.parse import parse_qs, urlsplit

    form = lclient.get("/steer")
    assert form.text.count('name="latent_sae"') == 1 and "blocks.2.hook_mlp_out" in form.text
    params = [("prompt", "The red fox"), ("sae", "tiny-sae"), ("max_new_tokens", "6"), ("temperature", "0"),
              ("latent", "3"), ("mode", "add"), ("value", "40"), ("latent_sae", "early"),
              ("latent", "5"), ("mode", "add"), ("value", ""), ("latent_sae", "late-mlp")]
    r = lclient.get("/steer", params=params, headers=HX)
    assert r.status_code == 200, r.text
    assert 'href="/latents/early/3"' in r.text and 'href="/latents/late-mlp/5"' in r.text
    q = parse_qs(urlsplit(r.headers["HX-Push-Url"]).query)
    assert q["latent_sae"] == ["early", "late-mlp"] and float(q["value"][1]) > 0  # the default, from late-mlp
    api = lclient.post("/api/steer", json={"prompt": "The red fox", "sae": "tiny-sae", "max_new_tokens": 6,
                                           "temperature": 0.0, "interventions": [
                                               {"latent": 3, "mode": "add", "value": 40.0, "sae": "early"},
                                               {"latent": 5, "mode": "add", "value": float(q["value"][1]),
                                                "sae": "late-mlp"}]}).json()
    shown = html.unescape(r.text.split('id="steered-text">')[1].split("</span>")[0])
    assert shown == api["steered"]  # the page ran the same two-layer generation
    bad = lclient.get("/steer", params=[*params[:4], ("latent", "3"), ("latent_sae", "nope")], headers=HX)
    assert bad.status_code == 404 and "unknown SAE" in bad.text


def test_layer_views_list_saes_in_forward_order(lclient):
    top = lclient.get("/inspect/layers", params={"text": TEXT}, headers=HX).text
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"]
    assert sorted(hooks, key=top.index) == hooks  # loaded as tiny-sae (1), early (0), late-mlp (2)
    page = lclient.get("/attribute", params={"text": TEXT}, headers=HX).text
    rows = page.split('id="heat-rows"')[1]
    assert sorted(hooks, key=rows.index) == hooks
